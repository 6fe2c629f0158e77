# -*- coding: utf-8 -*-
"""Running `kvctl ... --json` for the keyval.cluster modules, and reading what it prints.

kvctl exit codes: 0 ok, 1 refused or failed, 2 bad usage, 3 no reachable cluster or timeout.
Errors print {"error": {"code": ..., "message": ...}}; a failing module reports that message
as msg, with rc (kvctl's exit code) and error_code beside it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import time

# Where the keyval_node role installs KeyVal; searched after PATH.
DEFAULT_DIRS = ["/opt/keyval/current/bin"]

# The same rules as `keyval serve` and kvctl (keyval/config.py), so check mode refuses what
# kvctl would refuse.
NODE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def common_argument_spec(timeout):
    """The options every keyval.cluster module takes (see the kvctl doc fragment)."""
    return dict(
        kvctl_path=dict(type="path", aliases=["kvctl"]),
        endpoints=dict(type="list", elements="str"),
        timeout=dict(type="float", default=timeout),
        cacert=dict(type="path"),
        cert=dict(type="path"),
        key=dict(type="path", no_log=True),
        token_file=dict(type="path", no_log=True),
        token=dict(type="str", no_log=True),
    )


def bad_node_id(value, what="id"):
    """A one-line complaint about a node id kvctl would refuse, or None."""
    if not isinstance(value, str) or not NODE_ID.match(value) or value.startswith("-"):
        return "%s: %r is not a valid node id (letters, digits, '.', '_', '-')" % (what, value)
    return None


def bad_address(value, what="address"):
    """A one-line complaint about a peer address that is not HOST:PORT, or None."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "%s: expected HOST:PORT, got %r" % (what, value)
    return None


def global_flags(params, seconds):
    """kvctl's global options for these module params; credentials only when set.
    The token itself never goes on the command line (it goes in $KVCTL_TOKEN)."""
    flags = ["--json", "--timeout", "%g" % seconds]
    if params.get("endpoints"):
        flags += ["--endpoints", ",".join(e.strip() for e in params["endpoints"])]
    for option, flag in (("cacert", "--cacert"), ("cert", "--cert"), ("key", "--key"),
                         ("token_file", "--token-file")):
        if params.get(option):
            flags += [flag, params[option]]
    return flags


def membership(info):
    """What --diff shows: the voters and learners (with their peer addresses)."""
    addresses = dict((m["id"], m.get("peer_address")) for m in info.get("members", []))
    return {
        "voters": dict((i, addresses.get(i)) for i in sorted(info.get("voters", []))),
        "learners": dict((i, addresses.get(i)) for i in sorted(info.get("learners", []))),
    }


def find_member(info, node_id):
    for member in info.get("members", []):
        if member["id"] == node_id:
            return member
    return None


class Kvctl:
    """One module run's kvctl: found once, every call within the module's timeout."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.deadline = time.monotonic() + self.params["timeout"]
        self.changed = False  # set by the module once it has changed something
        self.binary = self._find()

    def _find(self):
        path = self.params.get("kvctl_path")
        if path:
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                self.module.fail_json(msg="kvctl_path %s is not an executable file" % path)
            return path
        found = self.module.get_bin_path("kvctl", opt_dirs=DEFAULT_DIRS)
        if not found:
            self.module.fail_json(msg="kvctl not found on PATH or in %s; set kvctl_path"
                                  % ", ".join(DEFAULT_DIRS))
        return found

    def remaining(self):
        return self.deadline - time.monotonic()

    def fail(self, msg, **extra):
        self.module.fail_json(msg=msg, changed=self.changed, **extra)

    def try_run(self, *args):
        """Run kvctl; (rc, document). Exits the module if kvctl printed no JSON."""
        seconds = max(1.0, round(self.remaining(), 1))
        argv = [self.binary] + global_flags(self.params, seconds) + list(args)
        environ = {"KVCTL_TOKEN": self.params["token"]} if self.params.get("token") else {}
        rc, out, err = self.module.run_command(argv, environ_update=environ)
        try:
            document = json.loads(out)
        except ValueError:
            lines = (err or out).strip().splitlines()
            self.fail("kvctl printed no JSON (exit %d): %s" % (rc, lines[-1] if lines else "no output"),
                      rc=rc, cmd=argv)
        return rc, document

    def run(self, *args):
        """Run kvctl and return its document; any failure ends the module with kvctl's message."""
        rc, document = self.try_run(*args)
        if rc != 0:
            self.fail_with(rc, document, args)
        return document

    def fail_with(self, rc, document, args):
        error = document.get("error", {}) if isinstance(document, dict) else {}
        self.fail(error.get("message", "kvctl %s failed (exit %d)" % (" ".join(args), rc)),
                  rc=rc, error_code=error.get("code"))

    def info(self):
        return self.run("cluster", "info")

    def member(self, node_id):
        """Member ``node_id``'s document, or None if it is not a member."""
        rc, document = self.try_run("cluster", "member", "--", node_id)
        if rc == 1 and document.get("error", {}).get("code") == "not_found":
            return None
        if rc != 0:
            self.fail_with(rc, document, ("cluster", "member", node_id))
        return document
