"""Which files to read: globs under the root, watchdog (inotify) events, periodic rescans."""

from __future__ import annotations

import glob
import os
import threading

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from agent import log
from agent.config import InputsConfig
from agent.globs import glob_regex


# What only file events can tell: new files, renames, deletions. Writes are not watched: every
# write() of a logger is an inotify event the kernel cannot merge when files interleave, and one
# wake-up per line cost more than the line (16% of a core at 2,000 lines/s); the loop polls its
# open files' sizes instead (Reader.poll), which reads many lines per wake-up.
WATCHED = [FileCreatedEvent, FileDeletedEvent, FileMovedEvent, DirCreatedEvent, DirDeletedEvent, DirMovedEvent]


class Discovery(FileSystemEventHandler):
    def __init__(self, cfg: InputsConfig, wake: threading.Event):
        self.root = os.path.abspath(cfg.root)
        self.include = [glob_regex(p) for p in cfg.include]
        self.exclude = [glob_regex(p) for p in cfg.exclude]
        self.extra = cfg.extra_paths
        self.extra_re = [glob_regex(p) for p in cfg.extra_paths]
        self.wake = wake
        self._changed: set[str] = set()
        self._lock = threading.Lock()
        self.rescan_requested = False
        self.unlisted: dict[str, str] = {}  # directory -> why it cannot be listed, as of the last scan
        self._matched: dict[str, bool] = {}  # path -> matches(path), for the paths of the last scan
        self.observer: Observer | None = None

    def job_of(self, path: str) -> str:
        """`/var/vcap/sys/log/<job>/...` -> `<job>` (as shown: a metric label, a field); empty outside the root."""
        rel = os.path.relpath(path, self.root)
        return log.shown(rel.split("/", 1)[0]) if "/" in rel and not rel.startswith("..") else ""

    def relpath(self, path: str) -> str:
        rel = os.path.relpath(path, self.root)
        return path if rel.startswith("..") else rel

    def matches(self, path: str) -> bool:
        rel = os.path.relpath(path, self.root)
        if not rel.startswith(".."):
            return any(r.match(rel) for r in self.include) and not any(r.match(rel) for r in self.exclude)
        return any(r.match(path) for r in self.extra_re)

    def scan(self) -> list[str]:
        found: list[str] = []
        failed: dict[str, str] = {}

        def unlisted(e: OSError) -> None:
            if not isinstance(e, FileNotFoundError):  # gone meanwhile (or no root yet): nothing to read
                failed[e.filename] = e.strerror or str(e)

        # Whether a path matches never changes: each is matched once, not at every rescan.
        known, self._matched = self._matched, {}
        for dirpath, _dirs, files in os.walk(self.root, onerror=unlisted):
            for p in (os.path.join(dirpath, f) for f in files):
                m = known.get(p)
                self._matched[p] = m = self.matches(p) if m is None else m
                if m:
                    found.append(p)
        self._report_unlisted(failed)
        for pattern in self.extra:
            found += [p for p in glob.glob(pattern) if os.path.isfile(p)]
        return found

    def _report_unlisted(self, failed: dict[str, str]) -> None:
        """Directories that cannot be listed hide their files: reported once, and a health reason."""
        for d, error in failed.items():
            if self.unlisted.get(d) != error:
                log.warn("dir_unreadable", "cannot list a log directory; its files are not shipped", path=d,
                         error=error, hint="the agent needs CAP_DAC_READ_SEARCH (or read and search permission)")
        for d in self.unlisted.keys() - failed.keys():
            log.info("dir_readable", "log directory can be listed again", path=d)
        self.unlisted = failed

    def start(self) -> None:
        self.observer = Observer()
        if os.path.isdir(self.root):
            self.observer.schedule(self, self.root, recursive=True, event_filter=WATCHED)
        for d in {os.path.dirname(p) for p in self.extra}:
            if os.path.isdir(d):
                self.observer.schedule(self, d, recursive=False, event_filter=WATCHED)
        self.observer.daemon = True
        try:
            self.observer.start()
        except OSError as e:  # e.g. inotify watch limit reached: rescans still find everything
            log.warn("watch_failed", "file events unavailable; relying on periodic rescans",
                     error=str(e), hint="raise fs.inotify.max_user_watches")

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()

    def take_changed(self) -> set[str]:
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        with self._lock:
            if event.is_directory:
                if event.event_type in ("created", "moved"):
                    self.rescan_requested = True
            else:
                self._changed.add(os.fsdecode(event.src_path))
                dest = getattr(event, "dest_path", "")
                if dest:
                    self._changed.add(os.fsdecode(dest))
        self.wake.set()
