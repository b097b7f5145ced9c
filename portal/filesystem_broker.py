"""kombu's filesystem transport (``filesystem://``), with whole messages only.

kombu writes a message file in place, so a worker listing the folder can take one that is
still empty or half written, and its JSONDecodeError stops the worker (a known open kombu
issue). Here a message is written under a temporary name and renamed into place (a rename
within one folder is atomic), and a message file that still does not decode (left by a
crash, or written by another program) is skipped and logged, never fatal.

portal/celery.py makes this the transport of ``filesystem://`` URLs in every process.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

# Names of files being written: never "<queue>.msg", so no reader lists them as messages.
PARTIAL_SUFFIX = ".partial"


def message_file_name(queue: str) -> str:
    """kombu's naming (time first, so sorted names are oldest first), which its readers and
    its purge and size counts match on."""
    return f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        folder = self.data_folder_out
        descriptor, partial = tempfile.mkstemp(dir=folder, prefix=".", suffix=PARTIAL_SUFFIX)
        try:
            with os.fdopen(descriptor, "wb") as partial_file:
                partial_file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, os.path.join(folder, message_file_name(queue)))
        except OSError as exc:
            _remove_quietly(partial)
            raise ChannelError(f"Cannot add a message to {folder!r}") from exc

    def _get(self, queue: str) -> Any:
        wanted = f"{queue}.msg"
        processed = self.processed_folder if self.store_processed else tempfile.gettempdir()
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            taken = os.path.join(processed, name)
            try:
                # Moving it out first is what claims it: another worker's move then fails.
                shutil.move(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue
            try:
                with open(taken, "rb") as message_file:
                    payload = message_file.read()
                if not self.store_processed:
                    os.remove(taken)
            except OSError as exc:
                raise ChannelError(f"Cannot read {taken!r} from the queue") from exc
            try:
                return loads(bytes_to_str(payload))
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                log.warning(
                    "Skipped broker message file %s of queue %s (%d bytes): not a whole "
                    "message (%s)",
                    name,
                    queue,
                    len(payload),
                    exc,
                )
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
