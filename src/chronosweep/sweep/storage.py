"""Where an experiment and its trials' run dirs live: a local folder or any URI pyarrow understands.

Each trial's run dir is ``<experiment>/<trial dir>/run/`` (the report reads that). With a local (or shared)
folder the trial writes there directly; with a remote URI it writes into its working directory, which Tune
syncs to the trial dir (``SyncConfig(sync_artifacts=True)``), or uploads it itself when it runs elsewhere.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

RUN = "run"


def is_remote(storage: str) -> bool:
    return "://" in storage and not storage.startswith("file://")


def normalize(storage: str) -> str:
    """Absolute local path (trials run in a scratch cwd), or the URI as given."""
    if storage.startswith("file://"):
        storage = storage[len("file://"):]
    if is_remote(storage):
        return storage.rstrip("/")
    return str(Path(storage).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


@dataclass(frozen=True)
class Location:
    """One path under the storage, readable and writable whether it is local or remote."""

    uri: str

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        return pafs.FileSystem.from_uri(self.uri)

    @property
    def local(self) -> Path | None:
        return None if is_remote(self.uri) else Path(self.uri)

    def child(self, *parts: str) -> Location:
        return Location(join(self.uri, *parts))

    def exists(self) -> bool:
        fs, path = self._fs()
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def read_bytes(self) -> bytes | None:
        fs, path = self._fs()
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as fh:
            return fh.read()

    def read_text(self) -> str | None:
        data = self.read_bytes()
        return None if data is None else data.decode()

    def write_bytes(self, data: bytes) -> None:
        """Replace the file whole: readers (and a resume after a kill) see the old content or the new, never part."""
        local = self.local
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, local)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return
        # Object stores publish an upload only when it completes.
        fs, path = self._fs()
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as fh:
            fh.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def names(self) -> list[str]:
        """The names of the entries directly in this folder (empty when it does not exist)."""
        fs, path = self._fs()
        if fs.get_file_info(path).type != pafs.FileType.Directory:
            return []
        return sorted(info.base_name for info in fs.get_file_info(pafs.FileSelector(path, recursive=False)))

    def upload(self, folder: Path) -> None:
        """Copy a local folder's contents here (no-op when this is that folder)."""
        local = self.local
        if local is not None and local.resolve() == folder.resolve():
            return
        fs, path = self._fs()
        fs.create_dir(path, recursive=True)
        pafs.copy_files(str(folder), path, destination_filesystem=fs)


def trial_run_dir(experiment: str, trial_dir: str) -> Location:
    return Location(join(experiment, trial_dir, RUN))


def finished_metrics(run: Location) -> dict | None:
    """metrics.json of a run that already finished (a trial restarted after its driver died), else None."""
    text = run.child("metrics.json").read_text()
    return json.loads(text) if text else None


def local_run_dir(run: Location) -> Path:
    """Where run_trial writes: the storage itself when local, else the trial's working directory."""
    return run.local if run.local is not None else Path(os.getcwd()) / RUN
