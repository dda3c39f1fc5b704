"""Upload a folder to a Hub repo (a dataset export, a trained model), sending only files whose
content changed. Shared by `sari-data publish` and `sari-train push`.

Data files (dataset shards, model weights: `is_data`) go first, in several commits (so an
interrupted push keeps what it sent and a re-run sends the rest); the card, other files and
deletions of stale data files go last in one commit. The token is passed to `huggingface_hub` and nowhere else: it never reaches a log line,
a card or a run record, and error messages are scrubbed of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import RepositoryNotFoundError
from huggingface_hub.utils import sha

from corpus.store import WorkspaceError

COMMIT_FILES = 50  # data files per commit
COMMIT_BYTES = 2 * 2**30  # and at most this much data per commit


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


def remote_files(api: HfApi, repo_id: str, repo_type: str = "dataset") -> dict[str, tuple[str, str | None]]:
    """Remote path -> (git blob id, LFS sha256 or None)."""
    tree = api.list_repo_tree(repo_id, repo_type=repo_type, recursive=True)
    return {f.path: (f.blob_id, f.lfs.sha256 if f.lfs else None) for f in tree if hasattr(f, "blob_id")}


def same_content(path: Path, remote: tuple[str, str | None]) -> bool:
    blob_id, lfs_sha256 = remote
    data = path.read_bytes()
    if lfs_sha256:
        return hashlib.sha256(data).hexdigest() == lfs_sha256
    return sha.git_hash(data) == blob_id


def plan_push(folder: Path, remote: dict[str, tuple[str, str | None]],
              is_data: Callable[[str], bool] = dataset_data) -> PushPlan:
    plan = PushPlan()
    files = local_files(folder)
    for path in files:
        known = remote.get(path)
        (plan.unchanged if known and same_content(folder / path, known) else plan.upload).append(path)
    plan.delete = sorted(p for p in remote if is_data(p) and p not in set(files))
    return plan


def dry_run_plan(folder: Path, repo_id: str | None, token: str | None, endpoint: str | None,
                 repo_type: str = "dataset", is_data: Callable[[str], bool] = dataset_data) -> PushPlan:
    """What a push would send: compared with the repo when it can be read, else every file."""
    if repo_id and token:
        try:
            return plan_push(folder, remote_files(HfApi(endpoint=endpoint, token=token), repo_id, repo_type), is_data)
        except RepositoryNotFoundError:
            pass  # a new repo: everything is sent
        except Exception as err:  # noqa: BLE001 - a dry run reports, it does not fail on the network
            raise PushError(scrub(f"cannot read {repo_id} to compare ({type(err).__name__}: {err})", token)) from None
    return PushPlan(upload=local_files(folder), remote_known=False)


def push(folder: Path, repo_id: str, *, token: str, private: bool = True, endpoint: str | None = None,
         resume_hint: str = "", repo_type: str = "dataset", is_data: Callable[[str], bool] = dataset_data,
         label: str = "sari-data publish") -> PushPlan:
    """Create the repo if needed (private by default) and commit what changed; returns the plan it carried out."""
    api = HfApi(endpoint=endpoint, token=token)
    done = 0
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        plan = plan_push(folder, remote_files(api, repo_id, repo_type), is_data)
        data = [p for p in plan.upload if is_data(p)]
        rest = [p for p in plan.upload if not is_data(p)]
        batches = commit_batches(folder, data)
        for i, batch in enumerate(batches):
            api.create_commit(repo_id, [CommitOperationAdd(p, folder / p) for p in batch], repo_type=repo_type,
                              commit_message=f"{label}: data files ({i + 1}/{len(batches)})")
            done += len(batch)
        if rest or plan.delete:
            operations = [CommitOperationAdd(p, folder / p) for p in rest]
            operations += [CommitOperationDelete(p) for p in plan.delete]
            api.create_commit(repo_id, operations, repo_type=repo_type, commit_message=f"{label}: card")
            done += len(rest)
    except Exception as err:  # every failure gets the same actionable message
        reason = " ".join(str(err).split())  # one line, as the CLI prints errors
        message = (f"upload to {repo_id} failed after {done} file(s) ({type(err).__name__}: {reason}). "
                   f"The local export {folder} is intact; resume with: {resume_hint or 'the same command'} "
                   f"(files already on the Hub are skipped)")
        raise PushError(scrub(message, token)) from None
    return plan


def commit_batches(folder: Path, paths: list[str]) -> list[list[str]]:
    batches: list[list[str]] = []
    size = 0
    for path in paths:
        file_size = (folder / path).stat().st_size
        if not batches or len(batches[-1]) >= COMMIT_FILES or size + file_size > COMMIT_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(path)
        size += file_size
    return batches


def scrub(text: str, token: str | None) -> str:
    return text.replace(token, "<token>") if token else text
