#!/bin/sh
# People's Response line: write Asterisk's configuration from the environment, then run it.
#
# Every start copies the pristine files from $PR_ASTERISK_CONF_SRC into $PR_ASTERISK_ETC
# and rewrites them, so a restart never works on an already-edited file.
#  - extensions.conf [globals]: PR_AGI (from PR_AGI_URL), PR_FALLBACK_DIAL, PR_FALLBACK_RING_S,
#    PR_REASSURE_S
#  - lines ending in "; @entrypoint:NAME" (pjsip.conf, manager.conf): the value of NAME
#  - PR_SIP_PROXY (optional, behind Kamailio: docs/kamailio.md): pjsip.conf takes calls only
#    from the proxy, each trunk named by the proxy's X-PR-Trunk header; unset, nothing changes
# Every value is checked first: one line, a strict character set, no ';' (a comment in
# Asterisk's files), no '$' '{' ',' '(' (dialplan expansion and argument injection).
# Refuses to start without PR_AMI_SECRET, or with a fallback that dials an emergency or
# police number.
# Arguments, when given, are run instead of Asterisk (the tests use this).
#
# Running outside the container (`peoples-response up`, the tests) also sets:
#  - PR_SIP_BIND (address[:port]), PR_AMI_PORT, PR_RTP_START/PR_RTP_END: where it listens
#  - PR_ASTERISK_INSTALL (the install prefix) and PR_ASTERISK_STATE (a folder of its own for
#    data, spool, logs and its control socket): written as asterisk.conf [directories]

set -eu
# No globbing of values split on ',' or '&'; turned on only to copy *.conf.
set -f
umask 077
CR=$(printf '\r')

SRC=${PR_ASTERISK_CONF_SRC:-/usr/share/peoples-response/asterisk}
ETC=${PR_ASTERISK_ETC:-/etc/asterisk}

die() {
    echo "entrypoint: refusing to start: $*" >&2
    exit 64
}
warn() {
    echo "entrypoint: warning: $*" >&2
}

# matches ERE VALUE: the whole value matches the extended regular expression.
matches() {
    printf '%s\n' "$2" | grep -Eqx -- "$1"
}

# single_line NAME VALUE: no newline or carriage return (they would start a new config line).
single_line() {
    case $2 in
        *"$CR"*) die "$1 must be a single line" ;;
    esac
    if [ "$(printf '%s' "$2" | wc -l)" -ne 0 ]; then
        die "$1 must be a single line"
    fi
}

# check NAME VALUE ERE WHAT: die unless VALUE is one line matching ERE.
check() {
    single_line "$1" "$2"
    matches "$3" "$2" || die "$1=$2 is not $4"
}

# secret NAME VALUE MINLEN: printable, no spaces, no ';' or '\', long enough.
check_secret() {
    single_line "$1" "$2"
    matches "[!-~]{$3,}" "$2" || die "$1 must be at least $3 printable characters without spaces"
    case $2 in
        *";"* | *"\\"*) die "$1 must not contain ';' or '\\'" ;;
    esac
}

# set_marked FILE NAME VALUE: rewrite every line ending in "; @entrypoint:NAME" as
# "key = VALUE ; @entrypoint:NAME" (uncommenting it). Values reach awk via the
# environment, never through its program text or -v (which would read backslashes).
set_marked() {
    PR_EP_NAME=$2 PR_EP_VALUE=$3 awk '
        BEGIN { marker = "; @entrypoint:" ENVIRON["PR_EP_NAME"] }
        length($0) >= length(marker) &&
        substr($0, length($0) - length(marker) + 1) == marker {
            key = $0
            sub(/^[ \t;]*/, "", key)
            sub(/[ \t]*=.*$/, "", key)
            print key " = " ENVIRON["PR_EP_VALUE"] " " marker
            next
        }
        { print }
    ' "$1" >"$1.new"
    mv "$1.new" "$1"
}

# set_global FILE KEY VALUE: rewrite KEY=... inside [globals]; the key must be there.
set_global() {
    if PR_EP_KEY=$2 PR_EP_VALUE=$3 awk '
        /^[ \t]*\[/ { in_globals = ($0 ~ /^[ \t]*\[globals\]/) }
        in_globals && index($0, ENVIRON["PR_EP_KEY"] "=") == 1 {
            print ENVIRON["PR_EP_KEY"] "=" ENVIRON["PR_EP_VALUE"]
            found = 1
            next
        }
        { print }
        END { exit(found ? 0 : 3) }
    ' "$1" >"$1.new"; then
        mv "$1.new" "$1"
    else
        rm -f "$1.new"
        die "$1 has no $2= line in [globals]"
    fi
}

# set_in_section FILE SECTION KEY VALUE: rewrite "KEY = ..." inside [SECTION] (an ini file
# with spaces around '='); the key must be there.
set_in_section() {
    if PR_EP_SECTION=$2 PR_EP_KEY=$3 PR_EP_VALUE=$4 awk '
        /^[ \t]*\[/ { in_section = (index($0, "[" ENVIRON["PR_EP_SECTION"] "]") == 1) }
        in_section && $0 ~ "^[ \t]*" ENVIRON["PR_EP_KEY"] "[ \t]*=" {
            print ENVIRON["PR_EP_KEY"] " = " ENVIRON["PR_EP_VALUE"]
            found = 1
            next
        }
        { print }
        END { exit(found ? 0 : 3) }
    ' "$1" >"$1.new"; then
        mv "$1.new" "$1"
    else
        rm -f "$1.new"
        die "$1 has no $3 in [$2]"
    fi
}

# digits VALUE: the value without a leading '+', if it is only digits; else empty.
digits() {
    d=${1#+}
    if matches '[0-9]+' "$d"; then printf '%s' "$d"; fi
    return 0
}

# refuse_emergency NAME NUMBER: die if NUMBER is an emergency number, possibly behind
# an outside-line or trunk prefix digit (9911, 1911), or one of PR_POLICE_NUMBERS.
refuse_emergency() {
    n=$(digits "$2")
    [ -n "$n" ] || return 0
    if matches '[019]?(911|112|999|933)' "$n"; then
        die "$1 dials $2, an emergency number: this line never involves police"
    fi
    police_ifs=$IFS
    IFS=,
    for police in ${PR_POLICE_NUMBERS:-}; do
        p=$(digits "$(printf '%s' "$police" | tr -d ' ')")
        if [ -z "$p" ]; then continue; fi
        # The same number, written with or without its country code.
        if [ "$n" = "$p" ] ||
            { [ ${#p} -ge 10 ] && [ "${n%"$p"}" != "$n" ]; } ||
            { [ ${#n} -ge 10 ] && [ "${p%"$n"}" != "$p" ]; }; then
            die "$1 dials $2, one of PR_POLICE_NUMBERS"
        fi
    done
    IFS=$police_ifs
    return 0
}

# private_ipv4 VALUE: loopback or RFC 1918.
private_ipv4() {
    matches '(127\.[0-9]{1,3}|10\.[0-9]{1,3}|172\.(1[6-9]|2[0-9]|3[01])|192\.168)\.[0-9]{1,3}\.[0-9]{1,3}' "$1"
}

HOST_ERE='[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?'
MATCH_ERE='[A-Za-z0-9.:/-]+(,[A-Za-z0-9.:/-]+)*'

# ---- read and check everything before touching a file --------------------------------

[ -n "${PR_AMI_SECRET:-}" ] || die "PR_AMI_SECRET is not set (the AMI has no default secret)"
check_secret PR_AMI_SECRET "$PR_AMI_SECRET" 16

# One FastAGI server, or several separated by commas: the dialplan tries them in this order
# ([pr-agi]), moving on only when one refuses the connection.
PR_AGI_URL=${PR_AGI_URL:-agi://agi:4573}
single_line PR_AGI_URL "$PR_AGI_URL"
case $PR_AGI_URL in
    "" | ,* | *, | *,,*) die "PR_AGI_URL=$PR_AGI_URL has an empty server in its list" ;;
esac
PR_AGI_LIST=""
old_ifs=$IFS
IFS=','
for server in $PR_AGI_URL; do
    check PR_AGI_URL "$server" 'h?agi://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?' \
        "agi://host[:port], or several joined by commas (no path: the dialplan adds /intake)"
    PR_AGI_LIST="${PR_AGI_LIST:+$PR_AGI_LIST|}$server"
done
IFS=$old_ifs
[ -n "$PR_AGI_LIST" ] || die "PR_AGI_URL names no FastAGI server"

# One of several Asterisk nodes behind a SIP proxy: its name (the dispatcher's PR_PBX_NODES
# key for it). Empty: the only node, as before.
PR_NODE_NAME=${PR_NODE_NAME:-}
if [ -n "$PR_NODE_NAME" ]; then
    check PR_NODE_NAME "$PR_NODE_NAME" '[A-Za-z0-9_-]{1,32}' "a node name (letters, digits, _ -)"
fi

PR_FALLBACK_DIAL=${PR_FALLBACK_DIAL:-PJSIP/fallback-desk}
single_line PR_FALLBACK_DIAL "$PR_FALLBACK_DIAL"
old_ifs=$IFS
IFS='&'
for target in $PR_FALLBACK_DIAL; do
    check PR_FALLBACK_DIAL "$target" '(PJSIP|Local)/[A-Za-z0-9+._-]+(@[A-Za-z0-9._-]+)?(/n)?' \
        "a list of PJSIP/<endpoint>, PJSIP/<number>@<trunk> or Local/<exten>@<context> joined by &"
    resource=${target#*/}
    refuse_emergency PR_FALLBACK_DIAL "${resource%%@*}"
done
IFS=$old_ifs
[ -n "$PR_FALLBACK_DIAL" ] || die "PR_FALLBACK_DIAL is empty"

PR_REASSURE_S=${PR_REASSURE_S:-45}
check PR_REASSURE_S "$PR_REASSURE_S" '[0-9]{1,3}' "a number of seconds"
if [ "$PR_REASSURE_S" -lt 5 ] || [ "$PR_REASSURE_S" -gt 600 ]; then
    die "PR_REASSURE_S must be between 5 and 600 seconds"
fi

PR_FALLBACK_RING_S=${PR_FALLBACK_RING_S:-25}
check PR_FALLBACK_RING_S "$PR_FALLBACK_RING_S" '[0-9]{1,3}' "a number of seconds"
if [ "$PR_FALLBACK_RING_S" -lt 5 ] || [ "$PR_FALLBACK_RING_S" -gt 120 ]; then
    die "PR_FALLBACK_RING_S must be between 5 and 120 seconds"
fi

PR_AMI_BINDADDR=${PR_AMI_BINDADDR:-127.0.0.1}
if [ "$PR_AMI_BINDADDR" = auto ]; then
    # The container's own address on the Compose network: reachable by the other
    # services, never by the published ports.
    PR_AMI_BINDADDR=$(hostname -i 2>/dev/null | awk '{ print $1 }')
fi
private_ipv4 "$PR_AMI_BINDADDR" ||
    die "PR_AMI_BINDADDR=$PR_AMI_BINDADDR is not a loopback or private (RFC 1918) IPv4 address"

if [ -n "${PR_FALLBACK_DESK_SECRET:-}" ]; then
    check_secret PR_FALLBACK_DESK_SECRET "$PR_FALLBACK_DESK_SECRET" 12
else
    # No shared default: a random secret nobody knows, so the desk can't register yet.
    PR_FALLBACK_DESK_SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    warn "PR_FALLBACK_DESK_SECRET is not set: the fallback desk phone can't register"
fi

# Behind a SIP proxy (Kamailio in front of several nodes, docs/kamailio.md): its address(es).
# Calls are then taken only from it, and the trunk a call came in on is the X-PR-Trunk header
# it writes (it drops any a caller sent); the trunks' own addresses are its business, never
# this node's, so a proxy address inside a trunk's network can't make every call a 911 one.
if [ -n "${PR_SIP_PROXY:-}" ]; then
    check PR_SIP_PROXY "$PR_SIP_PROXY" \
        '[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?(,[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?)*' \
        "a comma-separated list of IPv4 addresses (or networks, /16 to /32)"
    proxy_ifs=$IFS
    IFS=,
    for proxy in $PR_SIP_PROXY; do
        case $proxy in
            0.* | */[0-9] | */1[0-5]) die "PR_SIP_PROXY=$proxy is wider than one proxy's network" ;;
        esac
    done
    IFS=$proxy_ifs
fi

# Trunks: PR_<T>_TRUNK_HOST is where we send calls (aor contact) and, unless
# PR_<T>_TRUNK_MATCH lists the addresses/networks it calls from, where it calls from.
for trunk in DIRECT 911 988; do
    eval "host=\${PR_${trunk}_TRUNK_HOST:-}"
    eval "match=\${PR_${trunk}_TRUNK_MATCH:-}"
    if [ -n "$host" ]; then
        check "PR_${trunk}_TRUNK_HOST" "$host" "$HOST_ERE" "a host name or IPv4 address[:port]"
        eval "PR_${trunk}_TRUNK_CONTACT=sip:\$host"
        eval "PR_${trunk}_TRUNK_QUALIFY=60"
        [ -n "$match" ] || match=$host
    fi
    if [ -n "$match" ]; then
        check "PR_${trunk}_TRUNK_MATCH" "$match" "$MATCH_ERE" \
            "a comma-separated list of addresses, networks or host names"
        eval "PR_${trunk}_TRUNK_MATCH=\$match"
    elif [ -z "${PR_SIP_PROXY:-}" ]; then
        warn "PR_${trunk}_TRUNK_HOST is not set: calls from that trunk are refused"
    fi
done

PR_DIRECT_TRUNK_OUTBOUND_AUTH=
if [ -n "${PR_DIRECT_TRUNK_USERNAME:-}" ] || [ -n "${PR_DIRECT_TRUNK_PASSWORD:-}" ]; then
    if [ -z "${PR_DIRECT_TRUNK_USERNAME:-}" ] || [ -z "${PR_DIRECT_TRUNK_PASSWORD:-}" ]; then
        die "set both PR_DIRECT_TRUNK_USERNAME and PR_DIRECT_TRUNK_PASSWORD, or neither"
    fi
    check PR_DIRECT_TRUNK_USERNAME "$PR_DIRECT_TRUNK_USERNAME" '[A-Za-z0-9._@+-]+' "a SIP user name"
    check_secret PR_DIRECT_TRUNK_PASSWORD "$PR_DIRECT_TRUNK_PASSWORD" 1
    PR_DIRECT_TRUNK_OUTBOUND_AUTH=direct-trunk-auth
fi

if [ -n "${PR_EXTERNAL_ADDRESS:-}" ]; then
    check PR_EXTERNAL_ADDRESS "$PR_EXTERNAL_ADDRESS" "$HOST_ERE" "a host name or IPv4 address"
    # Docker's own networks are "local": everything else gets the external address.
    PR_LOCAL_NET=${PR_LOCAL_NET:-172.16.0.0/12}
    check PR_LOCAL_NET "$PR_LOCAL_NET" "$MATCH_ERE" "a comma-separated list of networks"
fi

# Where this Asterisk listens and keeps its state, outside the container.
if [ -n "${PR_SIP_BIND:-}" ]; then
    check PR_SIP_BIND "$PR_SIP_BIND" '[0-9]{1,3}(\.[0-9]{1,3}){3}(:[0-9]{1,5})?' "an IPv4 address[:port]"
fi
for name in PR_AMI_PORT PR_RTP_START PR_RTP_END; do
    eval "value=\${$name:-}"
    if [ -n "$value" ]; then
        check "$name" "$value" '[0-9]{1,5}' "a port number"
        if [ "$value" -lt 1 ] || [ "$value" -gt 65535 ]; then die "$name must be a port (1-65535)"; fi
    fi
done
if [ -n "${PR_RTP_START:-}" ] || [ -n "${PR_RTP_END:-}" ]; then
    if [ -z "${PR_RTP_START:-}" ] || [ -z "${PR_RTP_END:-}" ] || [ "$PR_RTP_END" -le "$PR_RTP_START" ]; then
        die "set both PR_RTP_START and PR_RTP_END, with PR_RTP_START < PR_RTP_END"
    fi
fi
# A second AMI user that reads every event class (AGI commands, dialplan steps): only for
# `simulate` and the tests on this machine, which watch a call as a person would hear it.
if [ -n "${PR_AMI_OBSERVER_SECRET:-}" ]; then
    check_secret PR_AMI_OBSERVER_SECRET "$PR_AMI_OBSERVER_SECRET" 16
fi
if [ -n "${PR_ASTERISK_INSTALL:-}" ] || [ -n "${PR_ASTERISK_STATE:-}" ]; then
    PATH_ERE='/[A-Za-z0-9._/+-]+'
    check PR_ASTERISK_INSTALL "${PR_ASTERISK_INSTALL:-}" "$PATH_ERE" "an absolute path"
    check PR_ASTERISK_STATE "${PR_ASTERISK_STATE:-}" "$PATH_ERE" "an absolute path"
fi

# ---- write ---------------------------------------------------------------------------

[ -d "$SRC" ] || die "no configuration to copy in $SRC"
[ -f "$SRC/extensions.conf" ] || die "$SRC/extensions.conf is missing"
mkdir -p "$ETC"
set +f
cp "$SRC"/*.conf "$ETC"/
set -f

set_global "$ETC/extensions.conf" PR_AGI "$PR_AGI_LIST"
set_global "$ETC/extensions.conf" PR_NODE "$PR_NODE_NAME"
if [ -n "$PR_NODE_NAME" ]; then
    set_marked "$ETC/asterisk.conf" PR_NODE_NAME "$PR_NODE_NAME"
fi
set_global "$ETC/extensions.conf" PR_FALLBACK_DIAL "$PR_FALLBACK_DIAL"
set_global "$ETC/extensions.conf" PR_FALLBACK_RING_S "$PR_FALLBACK_RING_S"
set_global "$ETC/extensions.conf" PR_REASSURE_S "$PR_REASSURE_S"

set_marked "$ETC/manager.conf" PR_AMI_BINDADDR "$PR_AMI_BINDADDR"
set_marked "$ETC/manager.conf" PR_AMI_SECRET "$PR_AMI_SECRET"

set_marked "$ETC/pjsip.conf" PR_FALLBACK_DESK_SECRET "$PR_FALLBACK_DESK_SECRET"
for trunk in DIRECT 911 988; do
    for what in CONTACT MATCH QUALIFY; do
        eval "value=\${PR_${trunk}_TRUNK_${what}:-}"
        # Behind the proxy no trunk is known by its address here (see PR_SIP_PROXY above).
        if [ "$what" = MATCH ] && [ -n "${PR_SIP_PROXY:-}" ]; then value=; fi
        if [ -n "$value" ]; then
            set_marked "$ETC/pjsip.conf" "PR_${trunk}_TRUNK_${what}" "$value"
        fi
    done
done
if [ -n "$PR_DIRECT_TRUNK_OUTBOUND_AUTH" ]; then
    set_marked "$ETC/pjsip.conf" PR_DIRECT_TRUNK_OUTBOUND_AUTH "$PR_DIRECT_TRUNK_OUTBOUND_AUTH"
    cat >>"$ETC/pjsip.conf" <<EOF

; Written by entrypoint.sh from PR_DIRECT_TRUNK_USERNAME / PR_DIRECT_TRUNK_PASSWORD.
[direct-trunk-auth]
type = auth
auth_type = userpass
username = $PR_DIRECT_TRUNK_USERNAME
password = $PR_DIRECT_TRUNK_PASSWORD
EOF
fi
if [ -n "${PR_SIP_PROXY:-}" ]; then
    # The header first: every call from the proxy also comes from the proxy's address, which
    # identifies only the proxy itself (its OPTIONS probes). Asterisk ORs an identify's
    # match and match_header, so they can't share a section (docs/kamailio.md).
    set_in_section "$ETC/pjsip.conf" global endpoint_identifier_order header,ip,username
    {
        cat <<EOF

; Written by entrypoint.sh from PR_SIP_PROXY: calls come through the SIP proxy (Kamailio,
; docs/kamailio.md), which names the trunk each came in on in X-PR-Trunk and drops any
; X-PR-Trunk a caller sent. These endpoints take calls from the proxy's address only, so a
; header sent straight to this node is refused whatever it says. Calls out (responders'
; mobiles, callbacks) still go straight to the carrier through direct-trunk.
[proxied-trunk](!,trunk-endpoint)
identify_by = header
deny = 0.0.0.0/0.0.0.0
permit = $PR_SIP_PROXY
EOF
        for name in direct 911 988; do
            cat <<EOF

[proxied-$name](proxied-trunk)
context = from-$name

[proxied-$name-identify]
type = identify
endpoint = proxied-$name
match_header = X-PR-Trunk: $name
EOF
        done
        cat <<EOF

; The proxy itself, known by its address: its OPTIONS probes are answered (200), so it keeps
; sending calls here. A call from it without X-PR-Trunk lands where nothing can be dialled.
[sip-proxy]
type = endpoint
context = pr-responder-phones
allow = !all,ulaw,alaw
identify_by = ip
deny = 0.0.0.0/0.0.0.0
permit = $PR_SIP_PROXY

[sip-proxy-identify]
type = identify
endpoint = sip-proxy
match = $PR_SIP_PROXY
EOF
    } >>"$ETC/pjsip.conf"
fi
if [ -n "${PR_EXTERNAL_ADDRESS:-}" ]; then
    set_marked "$ETC/pjsip.conf" PR_EXTERNAL_ADDRESS "$PR_EXTERNAL_ADDRESS"
    set_marked "$ETC/pjsip.conf" PR_LOCAL_NET "$PR_LOCAL_NET"
fi

if [ -n "${PR_SIP_BIND:-}" ]; then set_marked "$ETC/pjsip.conf" PR_SIP_BIND "$PR_SIP_BIND"; fi
if [ -n "${PR_AMI_PORT:-}" ]; then set_marked "$ETC/manager.conf" PR_AMI_PORT "$PR_AMI_PORT"; fi
if [ -n "${PR_RTP_START:-}" ]; then
    set_marked "$ETC/rtp.conf" PR_RTP_START "$PR_RTP_START"
    set_marked "$ETC/rtp.conf" PR_RTP_END "$PR_RTP_END"
fi
if [ -n "${PR_AMI_OBSERVER_SECRET:-}" ]; then
    cat >>"$ETC/manager.conf" <<EOF

; Written by entrypoint.sh from PR_AMI_OBSERVER_SECRET (simulate and tests only).
[pr-observer]
secret = $PR_AMI_OBSERVER_SECRET
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
permit = 10.0.0.0/255.0.0.0
read = all
write = system,call,originate,user,reporting,agent
EOF
fi
if [ -n "${PR_ASTERISK_STATE:-}" ]; then
    state=$PR_ASTERISK_STATE
    cat >>"$ETC/asterisk.conf" <<EOF

; Written by entrypoint.sh from PR_ASTERISK_INSTALL / PR_ASTERISK_STATE.
[directories]
astetcdir => $ETC
astmoddir => $PR_ASTERISK_INSTALL/lib/asterisk/modules
astsbindir => $PR_ASTERISK_INSTALL/sbin
astvarlibdir => $state/lib
astdbdir => $state/lib
astkeydir => $state/lib
astdatadir => $state/data
astagidir => $state/agi-bin
astspooldir => $state/spool
astrundir => $state/run
astlogdir => $state/log
EOF
fi

echo "entrypoint: AGI $PR_AGI_URL, fallback $PR_FALLBACK_DIAL (${PR_FALLBACK_RING_S}s)," \
    "AMI on $PR_AMI_BINDADDR:${PR_AMI_PORT:-5038}" >&2
if [ -n "${PR_SIP_PROXY:-}" ]; then
    echo "entrypoint: calls only through the SIP proxy at $PR_SIP_PROXY (X-PR-Trunk)" >&2
fi

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec asterisk -f
