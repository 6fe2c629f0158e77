"""`keyval serve --check-config`: checks the settings and the files they name, starts nothing."""
from __future__ import annotations

import yaml
from click.testing import CliRunner

from keyval.cli import cli
from keyval.peer.secret import SECRET_NAME, create_secret

BOOTSTRAP = {"node1": "127.0.0.1:7001", "node2": "127.0.0.1:7002", "node3": "127.0.0.1:7003"}


def check(tmp_path, **settings):
    path = tmp_path / "node.yaml"
    base = {"id": "node1", "peer_addr": "127.0.0.1:7001", "client_addr": "127.0.0.1:8001",
            "data_dir": str(tmp_path / "data"), "bootstrap": BOOTSTRAP}
    path.write_text(yaml.safe_dump({**base, **settings}))
    return CliRunner().invoke(cli, ["serve", "--check-config", "--config", str(path)], prog_name="keyval")


def test_a_good_config_passes_and_nothing_is_made(tmp_path):
    secret = create_secret(tmp_path / "cluster.secret")
    result = check(tmp_path, secret_file=str(secret))
    assert result.exit_code == 0, result.output
    assert "good (node node1, peers 127.0.0.1:7001, clients 127.0.0.1:8001)" in result.output
    assert not (tmp_path / "data").exists()


def test_a_lone_bootstrap_node_would_make_its_secret_but_the_check_does_not(tmp_path):
    result = check(tmp_path, bootstrap={"node1": "127.0.0.1:7001"})
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "data" / SECRET_NAME).exists()


def test_bad_configs_fail_in_one_line_with_exit_2(tmp_path):
    secret = create_secret(tmp_path / "cluster.secret")
    open_secret = tmp_path / "open.secret"
    open_secret.write_text("x" * 64)
    open_secret.chmod(0o644)
    tokens = tmp_path / "tokens"
    tokens.write_text("superuser ops " + "0" * 64 + "\n")
    tokens.chmod(0o600)
    cases = [
        ({}, "keyval secret create FILE"),  # three voters, no secret
        ({"secret_file": str(open_secret)}, "must be 0600 or stricter"),
        ({"secret_file": str(tmp_path / "missing")}, "cannot be read"),
        ({"secret_file": str(secret), "tokens_file": str(tokens)}, "role 'superuser'"),
        ({"secret_file": str(secret), "client_cert": str(tmp_path / "c.pem"), "client_key": str(tmp_path / "k.pem")},
         "cannot be read"),
        ({"secret_file": str(secret), "min_voter": 3}, "unknown key(s) min_voter"),
    ]
    for settings, message in cases:
        result = check(tmp_path, **settings)
        assert result.exit_code == 2, (settings, result.output)
        assert message in result.output, (settings, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
