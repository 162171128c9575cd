"""The outside world, played by a second Asterisk: the carrier's direct-line trunk, the 911
and 988 centers' trunks, responders' mobiles, and the fallback desk phone.

Every leg it makes or takes is real SIP over loopback with RFC 4733 DTMF, to the PBX
rendered from our own configuration. Each trunk calls from its own loopback address
(127.0.0.2 direct, .3 911, .4 988) because our pjsip.conf identifies trunks by address;
phones (the fallback desk registers) use .5. What each phone does when the PBX rings it
is in AstDB (``phones/<number or endpoint>``, ``phones/default``), set per test or per
``simulate --responders``:

  answer:SECONDS           rings, answers, presses 1 a moment into the whisper (again every 2 s)
  answer-late:SECONDS      rings, answers, hears the whisper out (8 s), then presses 1
  decline[:SECONDS]        answers, presses 2
  never                    rings until the PBX gives up
  voicemail[:SECONDS]      answers with a greeting and a beep, and never presses a key
  person[:SECONDS]         someone called back: answers, says "Hello?", listens
  hangup-in-whisper[:S]    answers, hangs up a second later
  busy / congestion        refuses (486 / 503)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from localpbx.install import ROOT
from localpbx.render import free_port, free_rtp_range, prepare_state

TRUNK_ADDRESSES = {"direct": "127.0.0.2", "911": "127.0.0.3", "988": "127.0.0.4"}
PHONES_ADDRESS = "127.0.0.5"

ASTERISK_CONF = """[options]
defaultlanguage = en
verbose = 0
debug = 0
nocolor = yes
transmit_silence = yes

[directories]
astetcdir => {etc}
astmoddir => {install}/lib/asterisk/modules
astsbindir => {install}/sbin
astvarlibdir => {state}/lib
astdbdir => {state}/lib
astkeydir => {state}/lib
astdatadir => {state}/data
astagidir => {state}/agi-bin
astspooldir => {state}/spool
astrundir => {state}/run
astlogdir => {state}/log
"""

MODULES_CONF = """[modules]
autoload = yes
noload = res_agi.so
noload = app_confbridge.so
noload = app_amd.so
"""

LOGGER_CONF = """[general]
dateformat = %F %T
[logfiles]
console => error,warning
"""

MANAGER_CONF = """[general]
enabled = yes
port = {ami_port}
bindaddr = {ami_host}
webenabled = no

[world]
secret = {secret}
deny = 0.0.0.0/0.0.0.0
permit = {ami_peer}/255.255.255.255
read = all
write = all
"""

RTP_CONF = """[general]
rtpstart = {rtp_start}
rtpend = {rtp_end}
"""

PJSIP_HEAD = """[global]
type = global
user_agent = PeoplesResponseWorld
endpoint_identifier_order = ip

[from-pbx]
type = endpoint
context = world-phones
allow = !all,ulaw,alaw
direct_media = no
dtmf_mode = rfc4733
rtp_symmetric = yes

[from-pbx-identify]
type = identify
endpoint = from-pbx
match = {pbx_host}

[transport-phones]
type = transport
protocol = udp
bind = {phones}:{port}
"""

PJSIP_TRUNK = """
[transport-{name}]
type = transport
protocol = udp
bind = {address}:{port}

[to-{name}]
type = endpoint
transport = transport-{name}
context = world-caller
aors = to-{name}
allow = !all,ulaw,alaw
direct_media = no
dtmf_mode = rfc4733
rtp_symmetric = yes
send_pai = yes
trust_id_outbound = yes

[to-{name}]
type = aor
contact = sip:{pbx}
"""

PJSIP_DESK_AUTH = """
[desk-auth]
type = auth
auth_type = userpass
username = fallback-desk
password = {secret}
"""

PJSIP_DESK = """
[{name}]
type = registration
transport = transport-phones
outbound_auth = desk-auth
server_uri = sip:{pbx}
client_uri = sip:fallback-desk@{pbx}
contact_user = fallback-desk
retry_interval = 2
expiration = 300
; Asterisk waits a random 1-10 s before a registration's first REGISTER by default: the
; desk would miss the calls of a test's first seconds.
max_random_initial_delay = 0
"""

EXTENSIONS_CONF = r"""[general]
static = yes
writeprotect = yes

[globals]

; ---- the PBX rings a phone: a responder's mobile (a number) or the fallback desk ----
[world-phones]
exten => _[+0-9a-z].,1,Set(B=${DB(phones/${EXTEN})})
 same => n,GotoIf($["${B}" != ""]?known)
 same => n,Set(B=${DB(phones/default)})
 same => n,GotoIf($["${B}" != ""]?known)
 same => n,Set(B=answer:2)
 same => n(known),Set(KIND=${CUT(B,:,1)})
 same => n,Set(SECS=${CUT(B,:,2)})
 same => n,UserEvent(WorldPhoneRang,Exten: ${EXTEN},Behaviour: ${B})
 same => n,Goto(phone-${KIND},s,1)

[phone-answer]
exten => s,1,Ringing()
 same => n,Wait(${IF($["${SECS}" = ""]?2:${SECS})})
 same => n,Answer()
 same => n,Wait(1.5)
 same => n(press),SendDTMF(1)
 same => n,Wait(2)
 same => n,Goto(press)

[phone-answer-late]
exten => s,1,Ringing()
 same => n,Wait(${IF($["${SECS}" = ""]?2:${SECS})})
 same => n,Answer()
 same => n,Wait(8)
 same => n(press),SendDTMF(1)
 same => n,Wait(2)
 same => n,Goto(press)

[phone-decline]
exten => s,1,Ringing()
 same => n,Wait(${IF($["${SECS}" = ""]?2:${SECS})})
 same => n,Answer()
 same => n,Wait(1.5)
 same => n,SendDTMF(2)
 same => n,Wait(60)

[phone-never]
exten => s,1,Ringing()
 same => n,Wait(3600)

[phone-voicemail]
exten => s,1,Ringing()
 same => n,Wait(${IF($["${SECS}" = ""]?5:${SECS})})
 same => n,Answer()
 same => n,Playback(vm-intro&beep)
 same => n,Wait(120)

[phone-person]
; Someone answering their own phone when the line calls them back: "Hello?", then they
; listen (answering-machine detection hears a short greeting and then silence: a person).
exten => s,1,Ringing()
 same => n,Wait(${IF($["${SECS}" = ""]?3:${SECS})})
 same => n,Answer()
 same => n,Wait(0.3)
 same => n,Playback(hello)
 same => n,Wait(3600)

[phone-hangup-in-whisper]
exten => s,1,Ringing()
 same => n,Wait(${IF($["${SECS}" = ""]?2:${SECS})})
 same => n,Answer()
 same => n,Wait(1)
 same => n,Hangup()

[phone-busy]
exten => s,1,Busy(5)

[phone-congestion]
exten => s,1,Congestion(5)

; ---- a caller the harness places (Originate): the PBX answered, the caller listens ----
[world-caller]
exten => s,1,Wait(86400)

; Audio the caller says (SAY_FILE, without extension), then back to listening.
[world-say]
exten => s,1,Playback(${SAY_FILE})
 same => n,Goto(world-caller,s,1)
"""


@dataclass
class WorldLayout:
    install: Path
    state: Path
    port: int
    ami_port: int
    secret: str
    ami_host: str = "127.0.0.1"

    @property
    def conf(self) -> Path:
        return self.state / "etc" / "asterisk.conf"

    @property
    def log(self) -> Path:
        return self.state / "asterisk.out"


def render_world(*, install: Path, state: Path, pbx_host: str, pbx_sip_port: int,
                 secret: str, desk_secret: str | None, sounds: Path,
                 ami_host: str = "127.0.0.1", ami_peer: str = "127.0.0.1",
                 trunk_target: str | None = None, pbx_match: str | None = None,
                 desk_on: list[str] | None = None) -> WorldLayout:
    """Write the world's configuration; the fallback desk registers only with a secret.
    ``ami_host``/``ami_peer``: where its AMI listens and the one address it lets in (the
    namespace's side and ours, when it runs in a private network namespace).
    ``trunk_target``: ``host:port`` the trunks send their calls to when that is not the PBX
    (a SIP proxy in front of several nodes); ``pbx_match``: the addresses the PBX's own
    calls come from when more than ``pbx_host`` (several nodes, comma-separated);
    ``desk_on``: every ``host:port`` the fallback desk registers with (each node rings it)."""
    state = state.resolve()
    prepare_state(install, state, sounds, "peoples-response")
    etc = state / "etc"
    port = free_port(TRUNK_ADDRESSES["direct"], udp_too=True)
    # In a private namespace every port is free; a port free here is as good as any.
    layout = WorldLayout(install, state, port, free_port("127.0.0.1"), secret, ami_host)
    rtp_start, rtp_end = free_rtp_range()
    pbx = f"{pbx_host}:{pbx_sip_port}"
    pjsip = PJSIP_HEAD.format(pbx_host=pbx_match or pbx_host, phones=PHONES_ADDRESS, port=port)
    for name, address in TRUNK_ADDRESSES.items():
        pjsip += PJSIP_TRUNK.format(name=name, address=address, port=port,
                                    pbx=trunk_target or pbx)
    if desk_secret:
        pjsip += PJSIP_DESK_AUTH.format(secret=desk_secret)
        for n, target in enumerate(desk_on or [pbx]):
            pjsip += PJSIP_DESK.format(name="fallback-desk" if n == 0 else f"fallback-desk-{n + 1}",
                                       pbx=target)
    files = {
        "asterisk.conf": ASTERISK_CONF.format(etc=etc, install=install, state=state),
        "modules.conf": MODULES_CONF, "logger.conf": LOGGER_CONF,
        "manager.conf": MANAGER_CONF.format(ami_port=layout.ami_port, secret=secret,
                                             ami_host=ami_host, ami_peer=ami_peer),
        "rtp.conf": RTP_CONF.format(rtp_start=rtp_start, rtp_end=rtp_end),
        "pjsip.conf": pjsip, "extensions.conf": EXTENSIONS_CONF,
        "musiconhold.conf": "[general]\n[default]\nmode = files\ndirectory = moh\n",
    }
    for name in ("cdr.conf", "cel.conf", "features.conf", "acl.conf", "udptl.conf",
                 "pjproject.conf", "stasis.conf", "ccss.conf"):
        source = ROOT / "asterisk" / name
        if source.exists():
            files[name] = source.read_text()
    for name, text in files.items():
        path = etc / name
        path.write_text(text)
        os.chmod(path, 0o600)
    indications = install / "share" / "indications.conf"
    if indications.exists():
        shutil.copy(indications, etc / "indications.conf")
    return layout


def trunk_env(world: WorldLayout) -> dict[str, str]:
    """The PBX's trunk settings that point at this world (for the entrypoint)."""
    env = {}
    for name, address in TRUNK_ADDRESSES.items():
        key = name.upper()
        env[f"PR_{key}_TRUNK_HOST"] = f"{address}:{world.port}"
        env[f"PR_{key}_TRUNK_MATCH"] = address
    return env
