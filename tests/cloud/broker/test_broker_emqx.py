"""`linli broker config --emqx`: the same identities and ACL for an EMQX cluster.

EMQX cannot run here, so its files are checked by what reads them there: Erlang reads `acl.conf`
(`file:consult`, as EMQX's file authorizer does) and recomputes every password hash with its own
`crypto:pbkdf2_hmac`; a HOCON parser reads `emqx.conf`. The ACL must grant each identity exactly
what the Mosquitto ACL written beside it grants, and nothing to anyone else.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from pyhocon import ConfigFactory  # type: ignore[import-untyped]

from test_broker_acl import CAM, DEPLOY

pytestmark = pytest.mark.servers  # every test here starts a server or a process

# The dynamic-security plugin's rights as EMQX's actions.
DYNSEC_TO_EMQX = {
    "publishClientSend": "publish",
    "subscribePattern": "subscribe",
    "publishClientReceive": "subscribe",
}

# Each rule of acl.conf as one line: allow, user, action, topic; or deny and all.
ACL_LINES = r"""
{ok, Terms} = file:consult(hd(init:get_plain_arguments())),
Show = fun(S) -> unicode:characters_to_binary(S) end,
lists:foreach(fun
    ({allow, {username, U}, A, Ts}) ->
        [io:format("allow\t~ts\t~s\t~ts~n", [Show(U), A, Show(T)]) || T <- Ts];
    ({deny, all}) -> io:format("deny\tall~n");
    ({deny, all, A, Ts}) -> [io:format("deny\tall\t~s\t~ts~n", [A, Show(T)]) || T <- Ts];
    (Other) -> io:format("unknown\t~p~n", [Other])
end, Terms),
halt().
"""

# Every user's hash recomputed the way EMQX checks it: PBKDF2 over the salt's bytes, lowercase hex.
HASH_CHECK = r"""
{ok, Bin} = file:read_file(hd(init:get_plain_arguments())),
Lines = [L || L <- binary:split(Bin, <<"\n">>, [global]), L =/= <<>>],
Bad = [N || L <- Lines, [N, P, S, H] <- [binary:split(L, <<"\t">>, [global])],
      string:lowercase(binary:encode_hex(crypto:pbkdf2_hmac(sha512, P, S, 1000, 64))) =/= H],
io:format("~B checked, ~B wrong~n", [length(Lines), length(Bad)]),
halt().
"""


def erl(program: str, path: Path) -> str:
    binary = shutil.which("erl")
    if binary is None:
        pytest.fail("erl is not installed: apt-get install -y erlang-base", pytrace=False)
    done = subprocess.run(
        [binary, "-noshell", "-eval", program, "-extra", str(path)],
        capture_output=True, text=True, timeout=60, check=False, cwd=path.parent,  # a crash dump goes there
    )  # fmt: skip
    if "undef,[{crypto," in done.stdout + done.stderr:
        pytest.fail("Erlang's crypto is not installed: apt-get install -y erlang-crypto", pytrace=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def emqx_config(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    certs = out.parent / "certs"
    if not certs.exists():
        made = subprocess.run([sys.executable, "-m", "linli.cli", "broker", "certs", "--out", str(certs)],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert made.returncode == 0, made.stderr
    return subprocess.run(
        [sys.executable, "-m", "linli.cli", "broker", "config",
         "--edge-config", str(DEPLOY / "district.toml"),
         "--notifier-config", str(DEPLOY / "notifier.local.toml"),
         "--waste-config", str(DEPLOY / "waste.local.toml"),
         "--out", str(out), "--certs", str(certs), "--emqx", *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def hocon(path: Path) -> Any:
    with warnings.catch_warnings():  # pyhocon uses pyparsing's old names
        warnings.simplefilter("ignore", DeprecationWarning)
        return ConfigFactory.parse_file(str(path))


def mosquitto_grants(dynsec: Path) -> set[tuple[str, str, str]]:
    """(user, EMQX action, topic) of each right the plugin allows (a topic one may receive on
    is one EMQX lets it subscribe to)."""
    doc = json.loads(dynsec.read_text())
    assert doc["defaultACLAccess"] == {
        "publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True
    }  # fmt: skip
    roles = {r["rolename"]: r["acls"] for r in doc["roles"]}
    return {
        (c["username"], DYNSEC_TO_EMQX[a["acltype"]], a["topic"])
        for c in doc["clients"] for r in c["roles"] for a in roles[r["rolename"]] if a["allow"]
    }  # fmt: skip


def test_the_emqx_acl_grants_each_identity_what_mosquitto_grants_and_denies_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "conf"
    done = emqx_config(out)
    assert done.returncode == 0, done.stderr
    assert "emqx/emqx.conf, acl.conf, users.csv" in done.stdout
    rules = [line.split("\t") for line in erl(ACL_LINES, out / "emqx" / "acl.conf").splitlines()]
    assert rules[-1] == ["deny", "all"]
    # First the notifier's shared groups, then no other group for anyone.
    group = "$share/linli-notifier/linli"
    assert rules[:3] == [
        ["allow", "notifier", "subscribe", f"{group}/alerts/#"],
        ["allow", "notifier", "subscribe", f"{group}/edges/+"],
        ["deny", "all", "subscribe", "$share/#"],
    ]
    allowed = rules[:2] + rules[3:-1]
    assert all(r[0] == "allow" and len(r) == 4 for r in allowed), [r for r in allowed if r[0] != "allow"]
    emqx_grants = {(user, action, topic) for _, user, action, topic in allowed}
    expected = mosquitto_grants(out / "dynsec.json")
    assert emqx_grants == expected
    assert len(expected) > 100
    # The camera may publish its own heartbeats and nothing of another camera's.
    camera = {(a, t) for u, a, t in emqx_grants if u == CAM}
    assert ("publish", "elevators/changhong-tower-1/elevator-1/heartbeat") in camera
    assert not any("changhong-tower-2" in t for _, t in camera)
    # Only the operator reads everything; wildcards do not reach `$SYS` in EMQX, so it is named.
    readers_of_all = {u for u, a, t in emqx_grants if t == "#"}
    assert readers_of_all == {"operator"}
    assert ("operator", "subscribe", "$SYS/#") in emqx_grants


def test_every_emqx_password_hash_is_what_erlang_computes_from_the_password(tmp_path: Path) -> None:
    out = tmp_path / "conf"
    assert emqx_config(out).returncode == 0
    passwords = json.loads((out / "secrets" / "identities.json").read_text())
    csv = (out / "emqx" / "users.csv").read_text().splitlines()
    assert csv[0] == "user_id,password_hash,salt,is_superuser"
    rows = [line.split(",") for line in csv[1:]]
    assert {r[0] for r in rows} == set(passwords)
    assert {r[3] for r in rows} == {"false"}
    assert len({r[2] for r in rows}) == len(rows)  # every salt its own
    check = tmp_path / "check.tsv"
    check.write_text("".join(f"{n}\t{passwords[n]}\t{s}\t{h}\n" for n, h, s, _ in rows))
    assert erl(HASH_CHECK, check).strip() == f"{len(rows)} checked, 0 wrong"
    # And a wrong password does not give the same hash.
    check.write_text("".join(f"{n}\t{passwords[n]}x\t{s}\t{h}\n" for n, h, s, _ in rows))
    assert erl(HASH_CHECK, check).strip() == f"{len(rows)} checked, {len(rows)} wrong"
    assert (out / "emqx" / "users.csv").stat().st_mode & 0o777 == 0o640


def test_the_emqx_config_points_at_its_own_files(tmp_path: Path) -> None:
    out = tmp_path / "conf"
    assert emqx_config(out).returncode == 0
    folder = (out / "emqx").resolve()
    conf = hocon(folder / "emqx.conf")
    authn = conf["authentication"][0]
    assert (authn["backend"], authn["bootstrap_type"], authn["user_id_type"]) == (
        "built_in_database", "hash", "username"
    )  # fmt: skip
    assert dict(authn["password_hash_algorithm"]) == {
        "name": "pbkdf2",
        "mac_fun": "sha512",
        "iterations": 1000,
    }
    assert Path(authn["bootstrap_file"]) == folder / "users.csv"
    source = conf["authorization"]["sources"][0]
    assert (source["type"], Path(source["path"])) == ("file", folder / "acl.conf")
    assert conf["authorization"]["no_match"] == "deny"
    ssl = conf["listeners"]["ssl"]["default"]["ssl_options"]
    for key in ("cacertfile", "certfile", "keyfile"):
        assert Path(ssl[key]).parent == folder / "certs", key
        assert Path(ssl[key]).exists(), key
    assert Path(ssl["keyfile"]).stat().st_mode & 0o777 == 0o600
    assert conf["listeners"]["tcp"]["default"]["bind"] == "0.0.0.0:1883"
    # As a container sees it: the paths are the ones given.
    assert emqx_config(out, "--emqx-dir", "/opt/emqx/etc/linli").returncode == 0
    moved = hocon(folder / "emqx.conf")
    assert moved["authentication"][0]["bootstrap_file"] == "/opt/emqx/etc/linli/users.csv"
    assert (
        moved["listeners"]["ssl"]["default"]["ssl_options"]["keyfile"]
        == "/opt/emqx/etc/linli/certs/server.key"
    )


def test_a_rerun_writes_the_same_users_and_a_rotation_changes_one(tmp_path: Path) -> None:
    out = tmp_path / "conf"
    assert emqx_config(out).returncode == 0
    before = (out / "emqx" / "users.csv").read_text().splitlines()
    assert emqx_config(out).returncode == 0
    assert (out / "emqx" / "users.csv").read_text().splitlines() == before
    assert emqx_config(out, "--rotate", CAM).returncode == 0
    after = (out / "emqx" / "users.csv").read_text().splitlines()
    assert {line.split(",")[0] for line in set(after) - set(before)} == {CAM}
