"""Callback plugin: SIGKILL this ansible-playbook right after the task named in
$KEYVAL_INTERRUPT_AFTER has finished on every host, as an operator's Ctrl-C or a dying
controller would: no handler runs, nothing is cleaned up. Deterministic, unlike a timer.
converge.yml enables it (ANSIBLE_CALLBACKS_ENABLED=interrupt_after) for one run only."""
from __future__ import annotations

import os
import signal
import sys

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: interrupt_after
type: aggregate
short_description: SIGKILL ansible-playbook right after the task named in KEYVAL_INTERRUPT_AFTER
description: Test scaffolding for interrupted runs of replace-node.yml (molecule/replace-node).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "interrupt_after"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.target = os.environ.get("KEYVAL_INTERRUPT_AFTER", "").strip()
        self.seen = None

    def _finished(self, result):
        name = result._task.get_name()
        # a role's task is shown as "role : name"; either form matches
        if self.target and self.target in (name, name.split(" : ", 1)[-1]):
            self.seen = name

    v2_runner_on_ok = v2_runner_on_skipped = _finished

    def _next(self, *args, **kwargs):
        # the named task has finished on every host once anything else starts
        if self.seen:
            sys.stdout.write(f"\ninterrupt_after: SIGKILL after task {self.seen!r}\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    v2_playbook_on_task_start = v2_playbook_on_handler_task_start = _next
    v2_playbook_on_play_start = v2_playbook_on_stats = _next
