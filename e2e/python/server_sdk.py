"""Runs devcycle-python-server-sdk (local bucketing) for e2e/python_test.go.

argv[1] is JSON: {"sdkKey", "cdnURL", "variable", "default", "pollMS"}. The config, and its
sse {hostname, path}, comes from the CDN stand-in; the SDK opens the stream itself. Prints one
JSON object per stdout line, like the node scripts (e2e/node/emit.mjs): {"ev":"ready"},
{"ev":"value"} whenever the variable's value changes, and the SDK's own log (logger
devcycle_python_sdk, every level) as {"ev":"log","level","msg"}. Exits when its stdin ends.
"""

import json
import logging
import os
import sys
import threading
import time

from devcycle_python_sdk import DevCycleLocalClient, DevCycleLocalOptions
from devcycle_python_sdk.models.user import DevCycleUser

_out = threading.Lock()


def emit(ev, **fields):
    """Prints {"ev": ev, "t": epoch ms (sub-ms precision), **fields} as one line."""
    line = json.dumps({"ev": ev, "t": time.time_ns() / 1e6, **fields})
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class _EmitHandler(logging.Handler):
    def emit(self, record):
        emit("log", level=record.levelname.lower(), msg=record.getMessage())


def _exit_with_parent(client):
    """Ends the process when the test closes our stdin (or dies)."""
    sys.stdin.read()
    client.close()
    os._exit(0)


def main():
    opts = json.loads(sys.argv[1])
    sdk_log = logging.getLogger("devcycle_python_sdk")
    sdk_log.setLevel(logging.DEBUG)
    sdk_log.addHandler(_EmitHandler())

    client = DevCycleLocalClient(
        opts["sdkKey"],
        DevCycleLocalOptions(
            config_cdn_uri=opts["cdnURL"],
            events_api_uri=opts["cdnURL"],
            config_polling_interval_ms=opts["pollMS"],
            disable_automatic_event_logging=True,
            disable_custom_event_logging=True,
        ),
    )
    threading.Thread(target=_exit_with_parent, args=(client,), daemon=True).start()
    while not client.is_initialized():
        time.sleep(0.001)
    emit("ready")

    # Read the variable every millisecond; report each change, so the test sees the moment a
    # new config takes effect.
    user = DevCycleUser(user_id="e2e-user")
    last = object()
    while True:
        try:
            value = client.variable_value(user, opts["variable"], opts["default"])
        except Exception as e:  # reported as a value, like the node scripts do
            value = f"error: {e}"
        if value != last:
            last = value
            emit("value", value=value)
        time.sleep(0.001)


if __name__ == "__main__":
    main()
