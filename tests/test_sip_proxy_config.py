"""Behind a SIP proxy (PR_SIP_PROXY, docs/kamailio.md): what asterisk/entrypoint.sh writes,
and what localpbx/kamailio.py renders for the proxy. Checked as files, as in
tests/test_asterisk_config.py; tests/test_kamailio.py runs them on the real Asterisk and
Kamailio.

The rule that shapes pjsip.conf here is Asterisk's own (res_pjsip_endpoint_identifier_ip.c):
an identify section matches a request that matches *any* of its criteria, so `match =
<proxy>` and `match_header` in one section would make every call from the proxy that
section's trunk. The trunks are known by the header alone, and only the proxy's address may
send it (an endpoint ACL); the proxy's address identifies only the proxy itself.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from localpbx import kamailio
from tests.test_asterisk_config import (
    CONF_FILES,
    DIALPLAN,
    SECRET,
    Section,
    parse_conf,
    run_entrypoint,
)

PROXY = "10.20.0.5"
CARRIER = {"PR_DIRECT_TRUNK_HOST": "203.0.113.10", "PR_911_TRUNK_HOST": "198.51.100.7:5062",
           "PR_988_TRUNK_MATCH": "198.51.100.128/25"}
TRUNKS = {"direct": "direct-trunk", "911": "trunk-911", "988": "trunk-988"}


@pytest.fixture
def conf_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for path in CONF_FILES:
        shutil.copy(path, src / path.name)
    shutil.copy(DIALPLAN, src / "extensions.conf")
    return src


def render(src: Path, etc: Path, **env: str) -> Path:
    result = run_entrypoint(src, etc, PR_AMI_SECRET=SECRET, PR_FALLBACK_DESK_SECRET="desk-secret-1234",
                            **env)
    assert result.returncode == 0, result.stderr
    return etc


def sections(path: Path) -> dict[tuple[str, str], Section]:
    """As tests/test_asterisk_config.resolve, with templates of templates (Asterisk follows
    them: [proxied-911](proxied-trunk) gets type = endpoint from trunk-endpoint)."""
    parsed = parse_conf(path)
    by_name = {s.name: s for s in reversed(parsed)}  # the first section of a name wins

    def items(s: Section) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for parent in s.parents:
            out += items(by_name[parent])
        return out + s.items

    out = {}
    for s in parsed:
        if not s.template:
            merged = Section(s.name, False, s.parents, items(s))
            key = (s.name, merged.get("type") or "")
            assert key not in out, f"[{s.name}] defined twice"
            out[key] = merged
    return out


# ---- the entrypoint --------------------------------------------------------------------------


def test_without_a_proxy_nothing_changes(conf_src: Path, tmp_path: Path) -> None:
    """A site with one box sets nothing new and gets what it always got: trunks known by
    their addresses, no header anywhere. And turning the proxy on changes exactly the
    identifier order and the three trunks' match lines, and appends its own block."""
    alone = render(conf_src, tmp_path / "alone", **CARRIER)
    pjsip = (alone / "pjsip.conf").read_text()
    assert "X-PR-Trunk" not in pjsip and "proxied-" not in pjsip
    conf = sections(alone / "pjsip.conf")
    assert conf[("global", "global")].get("endpoint_identifier_order") == "ip,username"
    assert conf[("direct-trunk-identify", "identify")].get("match") == "203.0.113.10"
    assert conf[("trunk-911-identify", "identify")].get("match") == "198.51.100.7:5062"

    proxied = render(conf_src, tmp_path / "proxied", PR_SIP_PROXY=PROXY, **CARRIER)
    for name in ("extensions.conf", "manager.conf", "rtp.conf", "asterisk.conf"):
        assert (proxied / name).read_bytes() == (alone / name).read_bytes(), name
    before = pjsip.splitlines()
    after = (proxied / "pjsip.conf").read_text().splitlines()
    assert len(after) > len(before)  # line for line, then the proxy's own block
    changed = [(a, b) for a, b in zip(before, after[:len(before)], strict=True) if a != b]
    assert changed == [
        ("endpoint_identifier_order = ip,username", "endpoint_identifier_order = header,ip,username"),
        ("match = 203.0.113.10 ; @entrypoint:PR_DIRECT_TRUNK_MATCH",
         "match = 192.0.2.1 ; @entrypoint:PR_DIRECT_TRUNK_MATCH"),
        ("match = 198.51.100.7:5062 ; @entrypoint:PR_911_TRUNK_MATCH",
         "match = 192.0.2.1 ; @entrypoint:PR_911_TRUNK_MATCH"),
        ("match = 198.51.100.128/25 ; @entrypoint:PR_988_TRUNK_MATCH",
         "match = 192.0.2.1 ; @entrypoint:PR_988_TRUNK_MATCH"),
    ]


def test_behind_the_proxy_each_trunk_is_its_header_from_the_proxy_only(conf_src: Path,
                                                                      tmp_path: Path) -> None:
    etc = render(conf_src, tmp_path / "etc", PR_SIP_PROXY=PROXY, **CARRIER)
    conf = sections(etc / "pjsip.conf")
    # The header first: the proxy's address identifies the proxy itself (its probes).
    assert conf[("global", "global")].get("endpoint_identifier_order") == "header,ip,username"
    for name, trunk in TRUNKS.items():
        endpoint = conf[(f"proxied-{name}", "endpoint")]
        assert endpoint.get("context") == f"from-{name}"
        assert endpoint.get("identify_by") == "header"
        assert endpoint.all("deny") == ["0.0.0.0/0.0.0.0"] and endpoint.all("permit") == [PROXY]
        # Everything else is the trunk's: codecs, DTMF, media through Asterisk, trust_id.
        original = conf[(trunk, "endpoint")]
        for key in ("allow", "direct_media", "dtmf_mode", "rtp_symmetric", "trust_id_inbound"):
            assert endpoint.get(key) == original.get(key), key
        identify = conf[(f"proxied-{name}-identify", "identify")]
        assert identify.get("endpoint") == f"proxied-{name}"
        assert identify.get("match_header") == f"X-PR-Trunk: {name}"
        # No trunk is known by an address on a node behind the proxy.
        assert conf[(f"{trunk}-identify", "identify")].get("match") == "192.0.2.1"
    # Calls out still go straight to the carrier.
    assert conf[("direct-trunk", "aor")].get("contact") == "sip:203.0.113.10"
    assert conf[("trunk-911", "aor")].get("contact") == "sip:198.51.100.7:5062"
    # The proxy: known by its address, and nothing can be dialled from its context.
    proxy = conf[("sip-proxy", "endpoint")]
    assert proxy.get("context") == "pr-responder-phones"
    assert proxy.all("permit") == [PROXY] and "auth" not in dict(proxy.items)
    assert conf[("sip-proxy-identify", "identify")].get("match") == PROXY
    # Asterisk ORs an identify's criteria: never an address and a header in one section.
    for (name, kind), section in conf.items():
        if kind == "identify":
            assert not (section.get("match_header") and section.get("match")), name


def test_several_proxies(conf_src: Path, tmp_path: Path) -> None:
    etc = render(conf_src, tmp_path / "etc", PR_SIP_PROXY="10.20.0.5,10.20.0.6/31")
    conf = sections(etc / "pjsip.conf")
    assert conf[("proxied-911", "endpoint")].all("permit") == ["10.20.0.5,10.20.0.6/31"]
    assert conf[("sip-proxy-identify", "identify")].get("match") == "10.20.0.5,10.20.0.6/31"


@pytest.mark.parametrize("proxy", [
    "0.0.0.0/0", "10.0.0.0/8", "172.16.0.0/12", "0.0.0.0", "kamailio", "10.20.0.5,",
    "10.20.0.5 ; evil", "10.20.0.5\n[evil]", "10.20.0.5, 10.20.0.6", "10.20.0.5|10.20.0.6",
])
def test_a_proxy_address_is_checked_before_anything_is_written(conf_src: Path, tmp_path: Path,
                                                               proxy: str) -> None:
    result = run_entrypoint(conf_src, tmp_path / "etc", PR_AMI_SECRET=SECRET, PR_SIP_PROXY=proxy)
    assert result.returncode != 0, proxy
    assert "PR_SIP_PROXY" in result.stderr
    assert not (tmp_path / "etc").exists()


def test_entrypoint_still_passes_shellcheck() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("no shellcheck")
    entrypoint = Path(__file__).resolve().parent.parent / "asterisk" / "entrypoint.sh"
    result = subprocess.run(["shellcheck", "-s", "sh", str(entrypoint)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout


# ---- the proxy's own configuration --------------------------------------------------------------


def test_kamailio_render(tmp_path: Path) -> None:
    layout = kamailio.render_kamailio(
        state=tmp_path, host="10.20.0.5", port=5060, nodes=["10.20.0.11:5060", "node-b:5080"],
        trunks={"direct": "203.0.113.10, 203.0.113.64/26", "911": "198.51.100.7:5062"},
        advertise="192.0.2.50:5060")
    site = layout.site.read_text()
    assert "#!define PR_LISTEN udp:10.20.0.5:5060 advertise 192.0.2.50:5060" in site
    assert '#!define PR_TRUNK_DIRECT "203.0.113.10/32,203.0.113.64/26"' in site
    assert '#!define PR_TRUNK_911 "198.51.100.7/32"' in site
    assert f'#!define PR_TRUNK_988 "{kamailio.NOBODY}"' in site  # unset: nobody
    assert layout.dispatcher_list.read_text().splitlines()[1:] == [
        "1 sip:10.20.0.11:5060 0 0", "1 sip:node-b:5080 0 0"]
    assert layout.cfg.read_text() == kamailio.TEMPLATE.read_text()


@pytest.mark.parametrize("kw, message", [
    ({"trunks": {"direct": "198.51.100.0/24", "911": "198.51.100.7"}}, "share sources"),
    ({"trunks": {"police": "198.51.100.7"}}, "unknown trunk"),
    ({"trunks": {"911": "bad_name!"}}, "not an address"),
    ({"nodes": []}, "no Asterisk node"),
    ({"nodes": ["10.20.0.11"]}, "host:port"),
    ({"nodes": ["10.20.0.11:5060", "10.20.0.11:5060"]}, "twice"),
    ({"host": "kamailio"}, "IPv4"),
    ({"host": "0.0.0.0"}, "own address"),
])
def test_kamailio_render_refuses(tmp_path: Path, kw: dict, message: str) -> None:
    args = {"state": tmp_path, "host": "10.20.0.5", "port": 5060, "nodes": ["10.20.0.11:5060"],
            "trunks": {}, **kw}
    with pytest.raises(kamailio.KamailioError, match=message):
        kamailio.render_kamailio(**args)


def test_kamailio_takes_the_trunks_from_the_entrypoints_settings() -> None:
    env = {"PR_DIRECT_TRUNK_HOST": "sip.carrier.example:5060", "PR_911_TRUNK_HOST": "198.51.100.7",
           "PR_911_TRUNK_MATCH": "198.51.100.0/28"}
    assert kamailio.trunks_from_env(env) == {"direct": "sip.carrier.example",
                                             "911": "198.51.100.0/28"}


def test_kamailio_main_renders_from_the_environment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if kamailio.binary() is None:
        pytest.skip("kamailio is not installed")
    for key, value in {"PR_KAMAILIO_LISTEN": "127.0.0.1:5099", "PR_KAMAILIO_STATE": str(tmp_path),
                       "PR_SIP_NODES": "127.0.0.1:5070,127.0.0.1:5071",
                       "PR_911_TRUNK_HOST": "127.0.0.3:5060"}.items():
        monkeypatch.setenv(key, value)
    assert kamailio.main(["--render-only"]) == 0  # and kamailio -c accepted it
    assert '"127.0.0.3/32"' in (tmp_path / "pr-site.cfg").read_text()
    monkeypatch.setenv("PR_SIP_NODES", "")
    assert kamailio.main(["--render-only"]) == 64
