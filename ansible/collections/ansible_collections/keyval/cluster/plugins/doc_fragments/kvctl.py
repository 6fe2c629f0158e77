# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    """Options shared by every keyval.cluster module: how to run kvctl and reach the cluster."""

    DOCUMENTATION = r"""
options:
  kvctl_path:
    description:
      - The kvctl executable to run.
      - By default C(kvctl) on the target's E(PATH), then C(/opt/keyval/current/bin/kvctl).
    type: path
    aliases: [kvctl]
  endpoints:
    description:
      - Client addresses (C(HOST:PORT)) of one or more cluster members, passed as C(--endpoints).
      - By default kvctl's own default, E(KVCTL_ENDPOINTS).
    type: list
    elements: str
  timeout:
    description:
      - Seconds the whole task may take; each kvctl call gets what is left as C(--timeout).
    type: float
  cacert:
    description: CA certificate that signed the members' client certificates (C(--cacert)).
    type: path
  cert:
    description: Client certificate for mutual TLS (C(--cert)).
    type: path
  key:
    description: Private key of O(cert) (C(--key)).
    type: path
  token_file:
    description: File holding the client token (C(--token-file)).
    type: path
  token:
    description:
      - The client token itself, for example from Ansible Vault.
      - Handed to kvctl in E(KVCTL_TOKEN), never on its command line; never logged.
      - O(token_file) is used instead when both are set.
    type: str
notes:
  - Runs C(kvctl ... --json) on the target and parses what it prints. On failure the result
    holds kvctl's own message in C(msg), its exit code in C(rc) (1 refused or failed, 2 bad
    usage, 3 no reachable cluster or a timeout) and its error code in C(error_code).
  - Credentials are passed only when set.
requirements:
  - kvctl (KeyVal) on the target host
"""
