"""Asterisk's configuration, the container images and the Compose file, checked as files.

Asterisk isn't installable here, so these read what Asterisk would read: the dialplan
through asterisklint, the .conf files through pyst2's parser (and, for pjsip.conf, whose
templates pyst2 can't read, a small parser that is cross-checked against pyst2 on the
other files), docker-compose.yml through PyYAML, and the entrypoint by running it on a
copy of the configuration.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from asterisk.config import Config

ROOT = Path(__file__).resolve().parent.parent
AST = ROOT / "asterisk"
DIALPLAN = ROOT / "dialplan" / "extensions.conf"
ENTRYPOINT = AST / "entrypoint.sh"
COMPOSE = ROOT / "docker-compose.yml"

TRUNKS = {"direct-trunk": "from-direct", "trunk-911": "from-911", "trunk-988": "from-988"}
# A context with no extensions on purpose (pjsip.conf says why).
NO_DIAL_CONTEXT = "pr-responder-phones"
SECRET_KEYS = {"secret", "password"}


# ---- a small reader for Asterisk's .conf format ------------------------------------------


@dataclass
class Section:
    name: str
    template: bool = False
    parents: list[str] = field(default_factory=list)
    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str, default: str | None = None) -> str | None:
        values = self.all(key)
        return values[-1] if values else default

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.items if k == key]


def _strip_comment(line: str) -> str:
    out, i = [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            out.append(line[i + 1])
            i += 2
            continue
        if line[i] == ";":
            break
        out.append(line[i])
        i += 1
    return "".join(out).strip()


def parse_conf(path: Path) -> list[Section]:
    """Sections in file order, with `[name](!)` templates and `[name](tmpl,...)` parents.

    Keeps `key = value` and `key => value` items; skips `#include`-style directives.
    """
    sections: list[Section] = []
    current: Section | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = _strip_comment(raw)
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[([^\]]+)\](?:\(([^)]*)\))?", line)
        if header:
            flags = [f.strip() for f in (header.group(2) or "").split(",") if f.strip()]
            current = Section(header.group(1), "!" in flags, [f for f in flags if f != "!"])
            sections.append(current)
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not a key = value line: {raw!r}"
        assert current is not None, f"{path.name}:{number}: option outside any section"
        current.items.append((key.strip(), value.lstrip(">").strip()))
    return sections


def resolve(sections: list[Section]) -> dict[tuple[str, str], Section]:
    """Non-template sections with their templates' options, keyed by (name, type)."""
    by_name: dict[str, Section] = {}
    for s in sections:
        by_name.setdefault(s.name, s)  # a template is found by its (unique) name
    out: dict[tuple[str, str], Section] = {}
    for s in sections:
        if s.template:
            continue
        items: list[tuple[str, str]] = []
        for parent in s.parents:
            assert parent in by_name, f"[{s.name}] uses unknown template {parent!r}"
            items.extend(by_name[parent].items)
        merged = Section(s.name, False, s.parents, items + s.items)
        kind = merged.get("type")
        assert kind, f"[{s.name}] has no type"
        assert (s.name, kind) not in out, f"[{s.name}] type={kind} defined twice"
        out[(s.name, kind)] = merged
    return out


def pyst2_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for category in Config(str(path)).categories:
        items = out.setdefault(category.name, {})
        for item in category.items:
            items.setdefault(item.name, []).append(item.value.strip())
    return out


def dialplan_contexts() -> dict[str, list[str]]:
    """Context name -> its extension lines, from the dialplan."""
    contexts: dict[str, list[str]] = {}
    current = None
    for raw in DIALPLAN.read_text(encoding="utf-8").splitlines():
        line = _strip_comment(raw)
        header = re.fullmatch(r"\[([^\]]+)\](?:\([^)]*\))?", line)
        if header:
            current = header.group(1)
            contexts.setdefault(current, [])
        elif current and re.match(r"(exten|same|include)\s*=>", line):
            contexts[current].append(line)
    return contexts


def dialplan_globals() -> dict[str, str]:
    sections = {s.name: s for s in parse_conf(DIALPLAN)}
    return dict(sections["globals"].items)


def pjsip() -> dict[tuple[str, str], Section]:
    return resolve(parse_conf(AST / "pjsip.conf"))


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def console_script(name: str) -> Path:
    script = Path(sys.executable).parent / name
    assert script.exists(), f"{name} is not installed next to {sys.executable}"
    return script


# ---- (1) the dialplan passes asterisklint --------------------------------------------------


def _asterisklint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(console_script("asterisklint")), "dialplan-check", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


# Applications asterisklint 0.4 has no definition for, and the module that provides each in
# our build (asterisk/build-modules.txt): its "does not exist" is about its own list.
LINT_UNKNOWN_APPS = {"AMD": "app_amd", "WaitForSilence": "app_waitforsilence"}


def lint_problems(path: Path) -> list[str]:
    """asterisklint's findings, less its not knowing applications our build has."""
    result = _asterisklint(path)
    out = (result.stdout + result.stderr).splitlines()
    built = set((AST / "build-modules.txt").read_text().split())
    rest = []
    for line in out:
        app = re.search(r"E_APP_MISSING: app '([^']+)' does not exist", line)
        if app and app.group(1) in LINT_UNKNOWN_APPS:
            assert LINT_UNKNOWN_APPS[app.group(1)] in built, line
            continue
        rest.append(line)
    return [line for line in rest if line.strip()]


def test_dialplan_passes_asterisklint() -> None:
    problems = lint_problems(DIALPLAN)
    assert not problems, "\n".join(problems)


# ---- (3) the .conf files ---------------------------------------------------------------------


CONF_FILES = sorted(AST.glob("*.conf"))


def test_expected_conf_files_exist() -> None:
    names = {p.name for p in CONF_FILES}
    for name in ("pjsip.conf", "manager.conf", "confbridge.conf", "musiconhold.conf",
                 "modules.conf", "asterisk.conf", "logger.conf", "rtp.conf"):
        assert name in names
    # The image takes the dialplan from dialplan/, never a second copy here.
    assert "extensions.conf" not in names


@pytest.mark.parametrize("path", [p for p in CONF_FILES if p.name != "pjsip.conf"],
                         ids=lambda p: p.name)
def test_pyst2_reads_conf_and_agrees_with_our_reader(path: Path) -> None:
    theirs = pyst2_sections(path)
    ours: dict[str, dict[str, list[str]]] = {}
    for s in parse_conf(path):
        assert not s.template and not s.parents, "templates: pyst2 can't read this file"
        items = ours.setdefault(s.name, {})
        for key, value in s.items:
            items.setdefault(key, []).append(value)
    assert ours == theirs


def test_pyst2_cannot_read_templates_so_pjsip_uses_our_reader() -> None:
    # If pyst2 ever learns "[name](!)", this reader can go.
    with pytest.raises(Exception, match="category"):
        Config(str(AST / "pjsip.conf"))


def test_no_secret_is_committed() -> None:
    for path in CONF_FILES:
        for s in parse_conf(path):
            for key, value in s.items:
                assert key not in SECRET_KEYS, (
                    f"{path.name} [{s.name}] has a {key}: secrets come from the environment")
                assert value, f"{path.name} [{s.name}] {key} is empty"


def test_trunks_land_in_their_own_inbound_context() -> None:
    conf = pjsip()
    contexts = dialplan_contexts()
    for name, context in TRUNKS.items():
        endpoint = conf[(name, "endpoint")]
        assert endpoint.get("context") == context
        assert context in contexts
        assert endpoint.get("allow") == "!all,ulaw,alaw"
        assert endpoint.get("direct_media") == "no"
        assert endpoint.get("dtmf_mode") == "rfc4733"
        assert endpoint.get("identify_by") == "ip"
        # Incoming calls are known by address; outgoing ones need a contact.
        aors = (endpoint.get("aors") or "").split(",")
        assert aors and all((aor.strip(), "aor") in conf for aor in aors)
        assert all(conf[(aor.strip(), "aor")].get("contact") for aor in aors)
        identifies = [s for (n, t), s in conf.items()
                      if t == "identify" and s.get("endpoint") == name]
        assert len(identifies) == 1 and identifies[0].get("match")


def test_every_endpoint_context_exists_and_phones_cannot_dial_out() -> None:
    contexts = dialplan_contexts()
    endpoints = {name: s for (name, kind), s in pjsip().items() if kind == "endpoint"}
    for name, endpoint in endpoints.items():
        context = endpoint.get("context")
        assert context, f"endpoint {name} has no context (it would land in 'default')"
        if context == NO_DIAL_CONTEXT:
            # Absent is as safe as empty (Asterisk answers 404); never any extension.
            assert not contexts.get(context), f"{context} must not have extensions"
        else:
            assert context in contexts, f"endpoint {name}: no context [{context}] in the dialplan"
    assert endpoints["fallback-desk"].get("context") == NO_DIAL_CONTEXT


def test_responder_phone_templates() -> None:
    sections = {(s.name, s.template): s for s in parse_conf(AST / "pjsip.conf")}
    kinds = {"responder-phone": "endpoint", "responder-phone-auth": "auth",
             "responder-phone-aor": "aor"}
    for name, kind in kinds.items():
        template = sections[(name, True)]
        assert template.get("type") == kind
    phone = sections[("responder-phone", True)]
    assert phone.get("context") == NO_DIAL_CONTEXT
    assert phone.get("allow") == "!all,ulaw,alaw"
    assert phone.get("direct_media") == "no"


def test_fallback_dial_default_names_a_real_endpoint() -> None:
    conf = pjsip()
    for target in dialplan_globals()["PR_FALLBACK_DIAL"].split("&"):
        tech, _, resource = target.partition("/")
        if tech == "PJSIP" and "@" not in resource:
            assert (resource, "endpoint") in conf, f"{target}: no such endpoint"
            assert (resource, "auth") in conf and (resource, "aor") in conf


def test_entrypoint_markers_are_on_lines_it_rewrites() -> None:
    _, known = _entrypoint_names()
    for path in CONF_FILES:
        for raw in path.read_text(encoding="utf-8").splitlines():
            marker = re.search(r"; @entrypoint:(\w+)$", raw)
            if marker:
                assert marker.group(1) in known, f"{path.name}: nothing writes {marker.group(1)}"


def test_manager_binds_privately_with_one_user_and_no_secret() -> None:
    sections = pyst2_sections(AST / "manager.conf")
    general = sections["general"]
    assert general["enabled"] == ["yes"]
    assert general["port"] == ["5038"]
    assert general["webenabled"] == ["no"]
    assert general["bindaddr"] == ["127.0.0.1"]
    users = [name for name in sections if name != "general"]
    assert users == ["peoples-response"]
    user = sections["peoples-response"]
    assert "secret" not in user
    assert user["deny"] == ["0.0.0.0/0.0.0.0"]
    for permit in user["permit"]:
        address = permit.split("/")[0]
        assert re.match(r"(127\.|10\.|172\.(1[6-9]|2\d|3[01])\.|192\.168\.)", address), permit
    read = set(user["read"][0].split(","))
    write = set(user["write"][0].split(","))
    assert {"system", "call", "agent", "user", "reporting"} <= read
    assert {"system", "call", "agent", "user", "originate", "reporting"} <= write
    assert not ({"all", "command", "config"} & (read | write))


def test_confbridge_profiles_used_by_the_dialplan_exist() -> None:
    conf = {s.name: s for s in parse_conf(AST / "confbridge.conf")}
    calls = re.findall(r"ConfBridge\(([^)]*)\)", DIALPLAN.read_text(encoding="utf-8"))
    assert calls, "the dialplan joins no ConfBridge"
    used_bridges, used_users = set(), set()
    # A ConfBridge with no user profile uses the channel's dynamic one, made from a template
    # (CONFBRIDGE(user,template)=...), which must exist too.
    templates = set(re.findall(r"CONFBRIDGE\(user,template\)=(\w+)", DIALPLAN.read_text()))
    for call in calls:
        args = [a.strip() for a in call.split(",")]
        assert len(args) in (2, 3), f"ConfBridge({call}): room, bridge profile[, user], no menu"
        used_bridges.add(args[1])
        if len(args) == 3:
            used_users.add(args[2])
        else:
            assert templates, f"ConfBridge({call}) without a user profile or a template"
    used_users |= templates
    assert {"pr_room"} <= used_bridges
    assert {"pr_caller", "pr_caller_waiting", "pr_responder"} <= used_users
    for name in used_bridges:
        assert conf[name].get("type") == "bridge"
    for name in used_users | {"pr_listener", "pr_supervisor"}:
        assert conf[name].get("type") == "user"
    # A key pressed in a room must do nothing: no menus at all.
    assert not [s.name for s in conf.values() if s.get("type") == "menu"]
    assert conf["pr_room"].get("record_conference") == "no"
    caller = conf["pr_caller"]
    assert caller.get("music_on_hold_when_empty") == "yes"
    assert caller.get("quiet") == "yes"
    # The caller is the one marked user; everyone else leaves when the caller does.
    assert [n for n, c in conf.items() if c.get("marked") == "yes"] == ["pr_caller",
                                                                       "pr_caller_waiting"]
    for name in ("pr_responder", "pr_interpreter", "pr_listener", "pr_supervisor"):
        assert conf[name].get("end_marked") == "yes", name
    assert conf["pr_listener"].get("startmuted") == "yes"
    moh = pyst2_sections(AST / "musiconhold.conf")
    for s in conf.values():
        if s.get("music_on_hold_class"):
            assert s.get("music_on_hold_class") in moh


def test_music_on_hold_classes_play_files() -> None:
    moh = pyst2_sections(AST / "musiconhold.conf")
    for name in ("default", "pr-waiting"):
        assert moh[name]["mode"] == ["files"]
        assert moh[name]["directory"]
    assert moh["pr-waiting"]["sort"] == ["alpha"]


# Applications the dialplan uses -> the module that provides them.
APP_MODULES = {"AGI": "res_agi", "ConfBridge": "app_confbridge", "Dial": "app_dial",
               "Playback": "app_playback", "Gosub": "app_stack", "ExecIf": "app_exec",
               "UserEvent": "app_userevent", "ChannelRedirect": "app_channelredirect"}


def test_modules_needed_by_the_dialplan_are_required() -> None:
    modules = pyst2_sections(AST / "modules.conf")["modules"]
    assert modules["autoload"] == ["yes"]
    required = {m.removesuffix(".so") for m in modules.get("require", [])}
    noload = {m.removesuffix(".so") for m in modules.get("noload", [])}
    assert not required & noload
    for mod in ("res_agi", "app_confbridge", "chan_pjsip", "res_musiconhold", "app_dial",
                "app_playback", "res_pjsip_header_funcs"):
        assert mod in required
    for mod in ("chan_sip", "chan_iax2", "chan_skinny", "chan_mgcp", "chan_unistim",
                "res_pjsip_phoneprov_provider", "cdr_csv"):
        assert mod in noload
    text = DIALPLAN.read_text(encoding="utf-8")
    for app, mod in APP_MODULES.items():
        if re.search(rf"\b{app}\(", text):
            assert mod in required, f"the dialplan uses {app}() but {mod} isn't required"
    if "PJSIP_HEADER(" in text:
        assert "res_pjsip_header_funcs" in required


def test_rtp_range_matches_published_ports() -> None:
    rtp = pyst2_sections(AST / "rtp.conf")["general"]
    wanted = f"{rtp['rtpstart'][0]}-{rtp['rtpend'][0]}"
    ports = compose()["services"]["asterisk"]["ports"]
    assert f"{wanted}:{wanted}/udp" in ports


# ---- (2) docker-compose.yml ------------------------------------------------------------------


PORT_RE = re.compile(r"(?:(?P<ip>\d+\.\d+\.\d+\.\d+):)?(?:(?P<host>\d+(?:-\d+)?):)?"
                     r"(?P<container>\d+(?:-\d+)?)(?:/(?P<proto>tcp|udp))?")


def _span(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def test_compose_services_and_builds() -> None:
    services = compose()["services"]
    # Every process the line needs (issue 9: the dispatcher, the worker and the panel too).
    assert set(services) == {"redis", "postgres", "agi", "dispatcher", "worker", "web",
                             "asterisk", "prompts"}
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name}: no image and no build"
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (ROOT / build["context"]).resolve()
        assert context.is_dir(), f"{name}: no build context {context}"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        # Every file the Dockerfile copies from the context exists.
        for line in dockerfile.read_text(encoding="utf-8").splitlines():
            copy = re.match(r"COPY\s+(?!--from)(.+)\s+\S+$", line.strip())
            if copy:
                for source in copy.group(1).split():
                    if not source.startswith("--") and source.strip("./"):
                        assert list(context.glob(source)), f"{dockerfile}: COPY {source}: none"
    assert services["asterisk"]["build"]["dockerfile"] == "asterisk/Dockerfile"
    assert services["redis"]["image"].startswith("redis:7")


def test_compose_ports_are_well_formed() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: quote ports ({port!r}): YAML reads 5060:5060 as base 60"
            m = PORT_RE.fullmatch(port)
            assert m, f"{name}: bad port {port!r}"
            low, high = _span(m.group("container"))
            assert 1 <= low <= high <= 65535
            if m.group("host"):
                h_low, h_high = _span(m.group("host"))
                assert h_high - h_low == high - low, f"{name}: {port}: ranges differ in length"
    published = compose()["services"]["asterisk"]["ports"]
    assert "5060:5060/udp" in published and "5060:5060/tcp" in published
    # AMI, FastAGI and Redis never leave the private network.
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert not re.search(r"\b(5038|4573|6379)\b", port), f"{name} publishes {port}"


def _entrypoint_names() -> tuple[set[str], set[str]]:
    """(names the entrypoint refuses to start without, every PR_ name it reads)."""
    text = ENTRYPOINT.read_text(encoding="utf-8")
    required = set(re.findall(r'\[ -n "\$\{(PR_\w+):-\}" \] \|\| die', text))
    names = set(re.findall(r"\bPR_[A-Z0-9_]*[A-Z0-9]\b", text))
    loops = re.findall(r"for trunk in ([A-Z0-9 ]+); do", text)
    suffixes = set(re.findall(r"PR_\$\{trunk\}_(\w+?)(?:\$|\"|\b)", text))
    whats = re.findall(r"for what in ([A-Z ]+); do", text)
    for loop in loops:
        for trunk in loop.split():
            for suffix in suffixes:
                if suffix.endswith("_"):
                    for what in " ".join(whats).split():
                        names.add(f"PR_{trunk}_{suffix}{what}")
                else:
                    names.add(f"PR_{trunk}_{suffix}")
    return required, names


def test_compose_provides_what_the_entrypoints_need() -> None:
    services = compose()["services"]
    asterisk = services["asterisk"]
    env = asterisk["environment"]
    required, known = _entrypoint_names()
    assert "PR_AMI_SECRET" in required
    for name in required:
        assert name in env, f"asterisk: {name} is required by entrypoint.sh"
    for name in env:
        assert name in known, f"asterisk: {name} is not read by entrypoint.sh (typo?)"
    # No default secret: Compose itself refuses to start without one.
    assert env["PR_AMI_SECRET"].startswith("${PR_AMI_SECRET:?")
    assert env["PR_AGI_URL"] == "agi://agi:4573"
    assert "redis://redis:6379/" in services["agi"]["environment"]["PR_REDIS_URL"]
    assert set(asterisk["depends_on"]) >= {"agi", "redis"}
    # The prompts the IVR names as peoples-response/<lang>/<name> are in Asterisk's sounds.
    prompts_volume = {v.split(":")[0] for v in services["prompts"]["volumes"]}
    mounts = {v.split(":")[0]: v.split(":")[1] for v in asterisk["volumes"]}
    sounds = "/var/lib/asterisk/sounds/" + dialplan_globals()["PR_PROMPTS"]
    assert any(mounts.get(v) == sounds for v in prompts_volume)
    assert set(prompts_volume) <= set(compose().get("volumes", {}))


def test_compose_shares_what_the_processes_share() -> None:
    """Callers' messages: Asterisk writes them where the IVR says (its own recordings
    folder), the IVR and the worker read them, the dispatcher and the worker delete them:
    one volume, mounted at the same path everywhere. SQL: one database for all."""
    services = compose()["services"]
    recordings = "/var/lib/peoples-response/recordings"
    for name in ("asterisk", "agi", "dispatcher", "worker"):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert mounts.get(recordings) == "recordings", name
    db = {services[n]["environment"]["PR_DATABASE_URL"] for n in
          ("dispatcher", "worker", "web", "prompts")}
    assert len(db) == 1 and "@postgres:5432/" in db.pop()
    for name in ("agi", "dispatcher", "worker", "web"):
        assert services[name]["environment"]["PR_REDIS_URL"].startswith("redis://redis:6379/")
    assert services["dispatcher"]["environment"]["PR_AMI_HOST"] == "asterisk"
    assert services["web"]["ports"] == ["127.0.0.1:8080:8080"]  # behind a TLS proxy
    # The app and Asterisk images run as the same uid, so both can delete a message.
    assert "--uid 10001" in (ROOT / "Dockerfile").read_text()
    assert "--uid 10001" in (ROOT / "asterisk" / "Dockerfile").read_text()


def test_compose_commands_are_cli_commands() -> None:
    from peoples_response import cli

    parser = cli.build_parser()
    for name in ("agi", "prompts"):
        command = compose()["services"][name]["command"]
        args = parser.parse_args(command)
        assert args.func
    agi = parser.parse_args(compose()["services"]["agi"]["command"])
    assert agi.host == "0.0.0.0" and agi.port == 4573
    root_dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["peoples-response"]' in root_dockerfile
    assert re.search(r"^USER (?!root)\S+", root_dockerfile, re.M)
    assert re.search(r"^USER asterisk$", (AST / "Dockerfile").read_text(encoding="utf-8"), re.M)


# ---- (4) and (5) the entrypoint ----------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_entrypoint_parses(shell: str) -> None:
    if not shutil.which(shell):
        pytest.skip(f"no {shell}")
    result = subprocess.run([shell, "-n", str(ENTRYPOINT)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_entrypoint_and_install_script_pass_shellcheck() -> None:
    assert shutil.which("shellcheck"), "shellcheck is missing (scripts/setup installs it)"
    result = subprocess.run(["shellcheck", "-s", "sh", str(ENTRYPOINT)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout
    result = subprocess.run(["shellcheck", str(ROOT / "scripts" / "install-asterisk")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


SECRET = "correct-horse-battery-staple-42"


@pytest.fixture
def conf_src(tmp_path: Path) -> Path:
    """What the image holds in /usr/share/peoples-response/asterisk."""
    src = tmp_path / "src"
    src.mkdir()
    for path in CONF_FILES:
        shutil.copy(path, src / path.name)
    shutil.copy(DIALPLAN, src / "extensions.conf")
    return src


def run_entrypoint(src: Path, etc: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PR_ASTERISK_CONF_SRC": str(src), "PR_ASTERISK_ETC": str(etc), **env}
    # "true" in place of Asterisk: the entrypoint execs its arguments when given some.
    return subprocess.run(["sh", str(ENTRYPOINT), "true"], env=full_env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_entrypoint_writes_globals_and_secrets(conf_src: Path, tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    result = run_entrypoint(
        conf_src, etc, PR_AMI_SECRET=SECRET, PR_AGI_URL="agi://ivr.internal:4600",
        PR_FALLBACK_DIAL="PJSIP/fallback-desk&PJSIP/+16175550123@direct-trunk",
        PR_FALLBACK_RING_S="40", PR_DIRECT_TRUNK_HOST="203.0.113.10",
        PR_911_TRUNK_MATCH="198.51.100.0/24,198.51.100.200", PR_FALLBACK_DESK_SECRET="desk-secret-1234")
    assert result.returncode == 0, result.stderr
    written = {s.name: dict(s.items) for s in parse_conf(etc / "extensions.conf")}["globals"]
    assert written["PR_AGI"] == "agi://ivr.internal:4600"
    assert written["PR_FALLBACK_DIAL"] == "PJSIP/fallback-desk&PJSIP/+16175550123@direct-trunk"
    assert written["PR_FALLBACK_RING_S"] == "40"
    assert written["PR_PROMPTS"] == dialplan_globals()["PR_PROMPTS"]
    # The rewritten dialplan is still one asterisklint accepts.
    problems = lint_problems(etc / "extensions.conf")
    assert not problems, "\n".join(problems)

    manager = pyst2_sections(etc / "manager.conf")
    assert manager["peoples-response"]["secret"] == [SECRET]
    assert manager["general"]["bindaddr"] == ["127.0.0.1"]
    conf = resolve(parse_conf(etc / "pjsip.conf"))
    assert conf[("direct-trunk", "aor")].get("contact") == "sip:203.0.113.10"
    assert conf[("direct-trunk-identify", "identify")].get("match") == "203.0.113.10"
    assert conf[("trunk-911-identify", "identify")].get("match") == "198.51.100.0/24,198.51.100.200"
    assert conf[("trunk-988-identify", "identify")].get("match") == "192.0.2.1"  # untouched
    assert conf[("fallback-desk", "auth")].get("password") == "desk-secret-1234"
    assert "outbound_auth" not in dict(conf[("direct-trunk", "endpoint")].items)
    # Secrets are readable by Asterisk's user only; no half-written files remain.
    assert (etc / "manager.conf").stat().st_mode & 0o077 == 0
    assert not list(etc.glob("*.new"))
    # The pristine copies are left alone, so a restart starts from them again.
    assert (conf_src / "manager.conf").read_text() == (AST / "manager.conf").read_text()
    again = run_entrypoint(conf_src, etc, PR_AMI_SECRET=SECRET)
    assert again.returncode == 0, again.stderr
    written = {s.name: dict(s.items) for s in parse_conf(etc / "extensions.conf")}["globals"]
    assert written["PR_AGI"] == "agi://agi:4573"
    assert written["PR_FALLBACK_DIAL"] == "PJSIP/fallback-desk"


def test_entrypoint_takes_several_fastagi_servers_in_order(conf_src: Path, tmp_path: Path) -> None:
    """PR_AGI_URL may name several servers (commas); the dialplan's [pr-agi] tries them in
    the order given, split on | (a comma would end CUT()'s own arguments)."""
    etc = tmp_path / "etc"
    result = run_entrypoint(conf_src, etc, PR_AMI_SECRET=SECRET,
                            PR_AGI_URL="agi://agi-a:4573,agi://agi-b.internal,hagi://agi.example.org")
    assert result.returncode == 0, result.stderr
    written = {s.name: dict(s.items) for s in parse_conf(etc / "extensions.conf")}["globals"]
    assert written["PR_AGI"] == "agi://agi-a:4573|agi://agi-b.internal|hagi://agi.example.org"
    problems = lint_problems(etc / "extensions.conf")
    assert not problems, "\n".join(problems)
    for bad in ("agi://a:4573,", ",agi://a:4573", "agi://a:4573,,agi://b", "agi://a:4573,http://b",
                "agi://a:4573|agi://b:4573", "agi://a:4573, agi://b:4573"):
        refused = run_entrypoint(conf_src, tmp_path / "no", PR_AMI_SECRET=SECRET, PR_AGI_URL=bad)
        assert refused.returncode != 0, bad
        assert "PR_AGI_URL" in refused.stderr, bad
        assert not (tmp_path / "no").exists()


def test_entrypoint_names_a_node_of_several(conf_src: Path, tmp_path: Path) -> None:
    """PR_NODE_NAME: the dialplan passes it to every AGI script, and Asterisk puts it in
    front of every uniqueid (systemname), so two nodes' channels never share one. Unset,
    neither is there (one node, as before)."""
    etc = tmp_path / "etc"
    result = run_entrypoint(conf_src, etc, PR_AMI_SECRET=SECRET, PR_NODE_NAME="node-b")
    assert result.returncode == 0, result.stderr
    written = {s.name: dict(s.items) for s in parse_conf(etc / "extensions.conf")}["globals"]
    assert written["PR_NODE"] == "node-b"
    assert pyst2_sections(etc / "asterisk.conf")["options"]["systemname"] == ["node-b"]
    alone = run_entrypoint(conf_src, tmp_path / "one", PR_AMI_SECRET=SECRET)
    assert alone.returncode == 0, alone.stderr
    written = {s.name: dict(s.items) for s in parse_conf(tmp_path / "one" / "extensions.conf")}
    assert written["globals"]["PR_NODE"] == ""
    assert "systemname" not in pyst2_sections(tmp_path / "one" / "asterisk.conf")["options"]
    for bad in ("node b", "node;b", "n" * 33, "node|b"):
        refused = run_entrypoint(conf_src, tmp_path / "no", PR_AMI_SECRET=SECRET, PR_NODE_NAME=bad)
        assert refused.returncode != 0 and "PR_NODE_NAME" in refused.stderr, bad
        assert not (tmp_path / "no").exists()


def test_entrypoint_direct_trunk_outbound_auth(conf_src: Path, tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    result = run_entrypoint(conf_src, etc, PR_AMI_SECRET=SECRET, PR_DIRECT_TRUNK_USERNAME="acct1",
                            PR_DIRECT_TRUNK_PASSWORD="pw-from-provider")
    assert result.returncode == 0, result.stderr
    conf = resolve(parse_conf(etc / "pjsip.conf"))
    assert conf[("direct-trunk", "endpoint")].get("outbound_auth") == "direct-trunk-auth"
    auth = conf[("direct-trunk-auth", "auth")]
    assert (auth.get("username"), auth.get("password")) == ("acct1", "pw-from-provider")
    half = run_entrypoint(conf_src, tmp_path / "etc2", PR_AMI_SECRET=SECRET,
                          PR_DIRECT_TRUNK_USERNAME="acct1")
    assert half.returncode != 0


def test_entrypoint_refuses_without_ami_secret(conf_src: Path, tmp_path: Path) -> None:
    for env in ({}, {"PR_AMI_SECRET": ""}, {"PR_AMI_SECRET": "short"},
                {"PR_AMI_SECRET": SECRET + "\nsecret = other"},
                {"PR_AMI_SECRET": SECRET + ";x"}):
        etc = tmp_path / f"etc{len(env)}{len(env.get('PR_AMI_SECRET', ''))}"
        result = run_entrypoint(conf_src, etc, **env)
        assert result.returncode != 0, env
        assert "PR_AMI_SECRET" in result.stderr
        assert not etc.exists(), "nothing may be written before every value is checked"


@pytest.mark.parametrize("fallback", [
    "PJSIP/911@direct-trunk", "PJSIP/+911@direct-trunk", "PJSIP/9911@direct-trunk",
    "PJSIP/fallback-desk&PJSIP/112@direct-trunk", "Local/999@pr-fallback", "PJSIP/911",
    "PJSIP/+16173434500@direct-trunk", "PJSIP/6173434500@direct-trunk",
])
def test_entrypoint_refuses_emergency_and_police_fallbacks(conf_src: Path, tmp_path: Path,
                                                           fallback: str) -> None:
    result = run_entrypoint(conf_src, tmp_path / "etc", PR_AMI_SECRET=SECRET,
                            PR_FALLBACK_DIAL=fallback, PR_POLICE_NUMBERS="+16173434500")
    assert result.returncode != 0
    assert "PR_FALLBACK_DIAL" in result.stderr
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("env", [
    {"PR_FALLBACK_DIAL": "PJSIP/desk,60,D(911)"},     # Dial() argument injection
    {"PR_FALLBACK_DIAL": "PJSIP/${EXTEN}"},            # dialplan expansion
    {"PR_FALLBACK_DIAL": "PJSIP/desk\nexten => s,1,Dial(PJSIP/911@direct-trunk)"},
    {"PR_FALLBACK_RING_S": "0"},
    {"PR_FALLBACK_RING_S": "25;"},
    {"PR_AGI_URL": "agi://agi:4573/intake"},
    {"PR_AGI_URL": "http://agi:4573"},
    {"PR_AMI_BINDADDR": "0.0.0.0"},
    {"PR_AMI_BINDADDR": "8.8.8.8"},
    {"PR_DIRECT_TRUNK_HOST": "sip.example.net ; evil"},
    {"PR_911_TRUNK_MATCH": "0.0.0.0/0\n[x]"},
])
def test_entrypoint_refuses_unsafe_values(conf_src: Path, tmp_path: Path,
                                          env: dict[str, str]) -> None:
    result = run_entrypoint(conf_src, tmp_path / "etc", PR_AMI_SECRET=SECRET, **env)
    assert result.returncode != 0, result.stderr
    assert next(iter(env)) in result.stderr
    assert not (tmp_path / "etc").exists()
