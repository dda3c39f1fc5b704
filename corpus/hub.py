"""Upload a folder to a Hub repo (a dataset export, a trained model) with `HfApi.upload_folder`.
Shared by `sari-data publish` and `sari-train push`.

`upload_folder`, not `upload_large_folder` (which huggingface_hub 2.4 no longer has): with hf_xet it streams the
files in several resumable, retried commits, skips files the repo already holds (the Hub's oid against the library's
hash) and takes a commit message and `delete_patterns` (stale data files go in its first commit). What was sent,
kept or deleted is read off the repo's file list before and after; we hash nothing. The token is passed to
`huggingface_hub` and nowhere else: it never reaches a log line, a card or a run record, and errors are scrubbed of it.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub._commit_api import _fetch_upload_modes
from huggingface_hub.errors import RepositoryNotFoundError
from huggingface_hub.utils import build_hf_headers

from corpus.store import WorkspaceError


class PushError(WorkspaceError):
    """An upload that failed; the message says how to resume (a WorkspaceError: the CLI prints it as one line)."""


@dataclass
class PushPlan:
    upload: list[str] = field(default_factory=list)  # paths relative to the folder, changed or new
    unchanged: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)  # stale data files on the Hub
    remote_known: bool = True  # False when a dry run could not see the repo (everything would be sent)


def local_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def dataset_data(path: str) -> bool:
    """A dataset export's data files: the Parquet shards under data/."""
    return path.startswith("data/")


def model_weights(path: str) -> bool:
    """A model folder's data files: its weights."""
    return path.endswith((".safetensors", ".bin", ".pt", ".gguf")) and "/" not in path


def remote_files(api: HfApi, repo_id: str, repo_type: str = "dataset") -> dict[str, str]:
    """Remote path -> git blob id (an LFS or xet file's pointer, whose id changes with the content)."""
    tree = api.list_repo_tree(repo_id, repo_type=repo_type, recursive=True)
    return {f.path: f.blob_id for f in tree if hasattr(f, "blob_id")}


def stale(remote: dict[str, str], folder: Path, is_data: Callable[[str], bool]) -> list[str]:
    """Data files on the Hub that the folder no longer has; other files of the repo are never deleted."""
    return sorted(p for p in remote if is_data(p) and not (folder / p).is_file())


def dry_run_plan(folder: Path, repo_id: str | None, token: str | None, endpoint: str | None,
                 repo_type: str = "dataset", is_data: Callable[[str], bool] = dataset_data) -> PushPlan:
    """What a push would send, by the check `upload_folder` makes (the Hub's preupload oid against the library's
    hash of the file; `_fetch_upload_modes` is private, as there is no public dry run); every file when the repo
    cannot be read."""
    files = local_files(folder)
    if repo_id and token:
        api = HfApi(endpoint=endpoint, token=token)
        try:
            remote = remote_files(api, repo_id, repo_type)
            adds = [CommitOperationAdd(path, folder / path) for path in files]
            _fetch_upload_modes(adds, repo_type, repo_id, build_hf_headers(token=token), "main", endpoint=api.endpoint)
        except RepositoryNotFoundError:
            pass  # a new repo: everything is sent
        except Exception as err:  # noqa: BLE001 - a dry run reports, it does not fail on the network
            raise PushError(scrub(f"cannot read {repo_id} to compare ({type(err).__name__}: {err})", token)) from None
        else:
            plan = PushPlan(delete=stale(remote, folder, is_data))
            for op in adds:
                (plan.unchanged if op._remote_oid == op._local_oid else plan.upload).append(op.path_in_repo)
            return plan
    return PushPlan(upload=files, remote_known=False)


def push(folder: Path, repo_id: str, *, token: str, private: bool = True, endpoint: str | None = None,
         resume_hint: str = "", repo_type: str = "dataset", is_data: Callable[[str], bool] = dataset_data,
         label: str = "sari-data publish") -> PushPlan:
    """Create the repo if needed (private by default), upload the folder and delete stale data files;
    returns what changed on the Hub."""
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        before = remote_files(api, repo_id, repo_type)
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type, commit_message=label,
                          delete_patterns=[glob.escape(p) for p in stale(before, folder, is_data)] or None)
        after = remote_files(api, repo_id, repo_type)
    except Exception as err:  # every failure gets the same actionable message
        reason = " ".join(str(err).split())  # one line, as the CLI prints errors
        message = (f"upload to {repo_id} failed ({type(err).__name__}: {reason}). The local export {folder} is "
                   f"intact; resume with: {resume_hint or 'the same command'} (files already on the Hub are skipped)")
        raise PushError(scrub(message, token)) from None
    files = local_files(folder)
    return PushPlan(upload=[p for p in files if before.get(p) != after.get(p)],
                    unchanged=[p for p in files if before.get(p) == after.get(p)],
                    delete=sorted(set(before) - set(after)))


def scrub(text: str, token: str | None) -> str:
    return text.replace(token, "<token>") if token else text
