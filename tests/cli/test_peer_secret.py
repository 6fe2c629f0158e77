"""Which cluster secret `keyval serve` runs with: peer traffic is authenticated by default."""
from __future__ import annotations

import stat

import pytest
from click.testing import CliRunner

from keyval.peer.auth import load_secret
from keyval.cli import cli
from keyval.config import node_config
from keyval.errors import ConfigError
from keyval.peer.secret import SECRET_NAME, create_secret, with_peer_secret

NODE = {"id": "node1", "peer_addr": "127.0.0.1:7001", "client_addr": "127.0.0.1:8001"}
TWO = "node1=127.0.0.1:7001,node2=127.0.0.1:7002"


def settle(**settings):
    return with_peer_secret(node_config({**NODE, **settings}))


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="keyval")


def test_a_node_bootstrapping_alone_makes_its_secret_and_keeps_it(tmp_path):
    config = settle(data_dir=str(tmp_path), bootstrap="node1=127.0.0.1:7001")
    path = tmp_path / SECRET_NAME
    assert config.secret_file == str(path) == config.transport_options["secret_file"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = load_secret(str(path))
    assert len(secret) == 64  # 32 random bytes, hex
    # Restarted (with or without --bootstrap) it runs with the same secret.
    assert settle(data_dir=str(tmp_path)).secret_file == str(path)
    assert load_secret(str(path)) == secret


def test_members_of_a_new_multi_node_cluster_must_be_given_one_secret(tmp_path):
    with pytest.raises(ConfigError, match="keyval secret create FILE"):
        settle(data_dir=str(tmp_path), bootstrap=TWO)
    assert list(tmp_path.iterdir()) == []  # nothing made: a secret of its own would shut it out


def test_a_joining_node_must_be_given_the_clusters_secret(tmp_path):
    with pytest.raises(ConfigError, match="needs the cluster's secret"):
        settle(data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="--secret-file"):
        settle(storage="memory")


def test_a_given_secret_file_is_used_and_handed_to_the_transport(tmp_path):
    path = create_secret(tmp_path / "s")
    config = settle(data_dir=str(tmp_path / "d"), bootstrap=TWO, secret_file=str(path))
    assert config.transport_options["secret_file"] == str(path)
    # The transport option alone counts as the secret file too.
    config = settle(bootstrap=TWO, transport_options={"secret_file": str(path)})
    assert config.secret_file == str(path)
    with pytest.raises(ConfigError, match="differs from the cluster secret"):
        settle(bootstrap=TWO, secret_file=str(path), transport_options={"secret_file": str(tmp_path / "other")})


def test_insecure_peers_is_an_explicit_choice(tmp_path):
    config = settle(data_dir=str(tmp_path), bootstrap=TWO, insecure_peers=True)
    assert config.secret_file is None and "secret_file" not in config.transport_options
    with pytest.raises(ConfigError, match="contradict"):
        settle(bootstrap=TWO, insecure_peers=True, secret_file=str(create_secret(tmp_path / "s")))


def test_serve_refuses_in_one_line_and_exit_2(tmp_path):
    result = invoke("serve", "--id", "node1", "--peer-addr", "127.0.0.1:7001", "--client-addr", "127.0.0.1:8001",
                    "--bootstrap", TWO, "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert result.output.startswith("keyval serve: peer traffic is authenticated with a cluster secret")
    loose = tmp_path / "loose"
    loose.write_text("hunter2\n")
    loose.chmod(0o644)
    result = invoke("serve", "--id", "node1", "--peer-addr", "127.0.0.1:7001", "--client-addr", "127.0.0.1:8001",
                    "--bootstrap", TWO, "--secret-file", str(loose))
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert "has mode 0644; it must be 0600 or stricter" in result.output


def test_secret_create_writes_0600_and_never_overwrites(tmp_path):
    path = tmp_path / "cluster.secret"
    result = invoke("secret", "create", str(path))
    assert result.exit_code == 0 and "--secret-file" in result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    result = invoke("secret", "create", str(path))
    assert result.exit_code == 1 and "never overwritten" in result.output
    assert path.read_bytes() == first
