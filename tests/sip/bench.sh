#!/usr/bin/env bash
# LeanSync Voice SIP test bench: a Kamailio "PBX" on loopback.
#
#   bench.sh start DIR   render kamailio.cfg.tmpl into DIR, create the users,
#                        start Kamailio in its own process group, wait until it
#                        answers SIP OPTIONS, print PORT=<n> and PGID=<n>.
#   bench.sh stop DIR    kill the bench's process group (idempotent).
#   bench.sh restart DIR stop, then start again on the same port with the
#                        same config and users: a PBX restart, which loses
#                        every registration and subscription (memory only).
#   bench.sh status DIR  exit 0 if the bench in DIR is running.
#
# Environment:
#   USERS   "user:password ..." (default "alice:secret bob:secret"); numbers
#           such as 41441234567 are fine as user names
#   PORT    use this UDP+TCP port instead of picking a free one
#   DOMAIN  SIP domain and digest realm (default 127.0.0.1)
#   KAMAILIO_SHM  shared memory in MB (-m), default 64
#   KAMAILIO_PKG  private memory per process in MB (-M), default 8
#   KAMAILIO_CHILDREN  UDP worker processes, default 2
#   INSTALL  1 (default): apt-get install missing packages when run as root;
#            0: fail instead
#
# Logs: DIR/kamailio.log. Needs: kamailio, kamailio-presence-modules,
# sip-tester (sipp); baresip is optional (click-to-call tests).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATE="$HERE/kamailio.cfg.tmpl"

die() { echo "bench.sh: $*" >&2; exit 1; }

ensure_packages() {
	local missing=()
	command -v kamailio >/dev/null 2>&1 || missing+=(kamailio)
	[ -e "$(module_dir)/presence_dialoginfo.so" ] || missing+=(kamailio-presence-modules)
	command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "${INSTALL:-1}" = 1 ] && [ "$(id -u)" = 0 ]; then
		echo "bench.sh: installing ${missing[*]}" >&2
		local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
		DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${missing[@]}" >&2 ||
			{ "${apt[@]}" update >&2 && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${missing[@]}" >&2; } ||
			die "could not install ${missing[*]}"
	else
		die "missing packages: ${missing[*]} (apt-get install -y ${missing[*]})"
	fi
}

module_dir() {
	local d
	for d in /usr/lib/x86_64-linux-gnu/kamailio/modules /usr/lib/aarch64-linux-gnu/kamailio/modules \
		/usr/lib/kamailio/modules /usr/local/lib64/kamailio/modules /usr/local/lib/kamailio/modules; do
		[ -e "$d/tm.so" ] && { echo "$d"; return; }
	done
	echo /usr/lib/x86_64-linux-gnu/kamailio/modules
}

dbtext_dir() {
	local d
	for d in /usr/share/kamailio/dbtext/kamailio /usr/local/share/kamailio/dbtext/kamailio; do
		[ -e "$d/subscriber" ] && { echo "$d"; return; }
	done
	die "db_text table files not found (package kamailio)"
}

port_in_use() {
	ss -Hlnu "sport = :$1" 2>/dev/null | grep -q . && return 0
	ss -Hlnt "sport = :$1" 2>/dev/null | grep -q . && return 0
	return 1
}

pick_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		port_in_use "$p" || { echo "$p"; return; }
	done
	die "no free port found"
}

md5() { printf '%s' "$1" | md5sum | cut -d' ' -f1; }

# db_text escapes ':' and '\' inside values
dbtext_escape() { local s=${1//\\/\\\\}; printf '%s' "${s//:/\\:}"; }

make_db() {
	local dir=$1 domain=$2 id=0 entry user pass
	rm -rf "$dir/db"
	mkdir -p "$dir/db"
	cp "$(dbtext_dir)"/* "$dir/db/"
	chmod u+w "$dir/db"/*
	head -n 1 "$(dbtext_dir)/subscriber" >"$dir/db/subscriber"
	for entry in ${USERS:-alice:secret bob:secret}; do
		user=${entry%%:*}
		pass=${entry#*:}
		[ -n "$user" ] && [ "$user" != "$entry" ] || die "bad USERS entry '$entry' (want user:password)"
		id=$((id + 1))
		printf '%s:%s:%s:%s:%s:%s\n' "$id" "$(dbtext_escape "$user")" "$(dbtext_escape "$domain")" \
			"$(dbtext_escape "$pass")" "$(md5 "$user:$domain:$pass")" \
			"$(md5 "$user@$domain:$domain:$pass")" >>"$dir/db/subscriber"
	done
}

render() {
	local dir=$1 port=$2 domain=$3
	sed -e "s|@PORT@|$port|g" -e "s|@DIR@|$dir|g" -e "s|@DOMAIN@|$domain|g" \
		-e "s|@CHILDREN@|${KAMAILIO_CHILDREN:-2}|g" \
		-e "s|@MPATH@|$(module_dir)|g" "$TEMPLATE" >"$dir/kamailio.cfg"
}

write_ping() {
	cat >"$1/ping.xml" <<'XML'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="bench ping">
  <send retrans="20">
    <![CDATA[
      OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:ping@[local_ip]:[local_port]>;tag=[pid]P[call_number]
      To: <sip:[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" timeout="500"/>
</scenario>
XML
}

ping() { # dir port
	(cd "$1" && timeout 3 sipp -sf ping.xml -m 1 -i 127.0.0.1 -nostdin -timeout 2s \
		"127.0.0.1:$2" >/dev/null 2>&1 </dev/null)
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Live (non-zombie) kamailio processes of process group $1 started with
# config $2 (any config when empty). Matching the command name and the config
# path guards against a reused pgid and never matches this script's own
# pipeline (ps -g would select by session, not process group). The dead main
# process stays a zombie until init reaps it, which can take seconds.
group_procs() {
	ps -eo pgid=,stat=,comm=,args= 2>/dev/null |
		awk -v g="$1" -v cfg="$2" '$1 == g && $2 !~ /^Z/ && $3 == "kamailio" &&
			(cfg == "" || index($0, "-f " cfg " ") > 0) { n++ } END { exit n > 0 ? 0 : 1 }'
}
group_alive() { group_procs "$1" ""; }
ours() { group_procs "$2" "$1/kamailio.cfg"; }

start_once() { # dir port [keep-config] -> 0 ok, 2 bind failure, 1 other failure
	local dir=$1 port=$2 domain=${DOMAIN:-127.0.0.1} pid pgid i
	if port_in_use "$port"; then
		echo "bench.sh: port $port is in use" >&2
		return 2
	fi
	[ -n "${3:-}" ] || render "$dir" "$port" "$domain"
	rm -f "$dir/kamailio.pid" "$dir/kamailio.pgid" "$dir/kamailio_ctl"
	# setsid: own session and process group; stdio detached so callers reading
	# our stdout see EOF when this script exits
	setsid kamailio -DD -E -Y "$dir" -m "${KAMAILIO_SHM:-64}" -M "${KAMAILIO_PKG:-8}" -f "$dir/kamailio.cfg" -P "$dir/kamailio.pid" \
		</dev/null >"$dir/kamailio.log" 2>&1 &
	pid=$!
	for i in $(seq 1 200); do # up to ~10 s
		if ! alive "$pid"; then
			wait "$pid" 2>/dev/null || true
			grep -qiE "address already in use|bind.*failed|cannot bind" "$dir/kamailio.log" && return 2
			return 1
		fi
		if ping "$dir" "$port" && alive "$pid"; then
			pgid=$(ps -o pgid= -p "$pid" | tr -d ' ')
			[ -n "$pgid" ] || return 1
			echo "$pgid" >"$dir/kamailio.pgid"
			echo "$port" >"$dir/port"
			echo "PORT=$port"
			echo "PGID=$pgid"
			return 0
		fi
		sleep 0.05
	done
	kill -KILL -- "-$pid" 2>/dev/null || true
	return 1
}

cmd_start() {
	local dir=$1 port rc tries=5
	ensure_packages
	[ -f "$TEMPLATE" ] || die "template $TEMPLATE missing"
	mkdir -p "$dir"
	dir="$(cd "$dir" && pwd)"
	if [ -f "$dir/kamailio.pgid" ] && ours "$dir" "$(cat "$dir/kamailio.pgid")" &&
		group_alive "$(cat "$dir/kamailio.pgid")"; then
		die "a bench is already running in $dir (bench.sh stop $dir)"
	fi
	write_ping "$dir"
	make_db "$dir" "${DOMAIN:-127.0.0.1}"
	[ -n "${PORT:-}" ] && tries=1
	while [ $tries -gt 0 ]; do
		tries=$((tries - 1))
		port=${PORT:-$(pick_port)}
		rc=0
		start_once "$dir" "$port" || rc=$?
		[ $rc = 0 ] && return 0
		[ $rc = 2 ] && [ $tries -gt 0 ] && continue
		break
	done
	echo "bench.sh: kamailio did not start" >&2
	[ -f "$dir/kamailio.log" ] && tail -n 30 "$dir/kamailio.log" >&2
	exit 1
}

cmd_stop() {
	local dir=$1 pgid i
	[ -f "$dir/kamailio.pgid" ] || return 0
	pgid=$(cat "$dir/kamailio.pgid")
	[ -n "$pgid" ] && [ "$pgid" -gt 1 ] || die "bad pgid '$pgid' in $dir/kamailio.pgid"
	dir="$(cd "$dir" && pwd)"
	if ! ours "$dir" "$pgid"; then
		rm -f "$dir/kamailio.pgid" # already gone (and the pgid may be reused)
		return 0
	fi
	kill -TERM -- "-$pgid" 2>/dev/null || true
	for i in $(seq 1 50); do
		group_alive "$pgid" || break
		sleep 0.05
	done
	group_alive "$pgid" && kill -KILL -- "-$pgid" 2>/dev/null
	true
	rm -f "$dir/kamailio.pgid"
}

cmd_restart() {
	local dir=$1 port i
	[ -f "$dir/port" ] && [ -f "$dir/kamailio.cfg" ] || die "no bench was started in $dir (bench.sh start $dir)"
	dir="$(cd "$dir" && pwd)"
	port=$(cat "$dir/port")
	cmd_stop "$dir"
	# the old instance's sockets may take a moment to close
	for i in $(seq 1 100); do
		port_in_use "$port" || break
		sleep 0.05
	done
	start_once "$dir" "$port" keep || {
		echo "bench.sh: kamailio did not start again on port $port" >&2
		tail -n 30 "$dir/kamailio.log" >&2
		exit 1
	}
}

cmd_status() {
	local dir=$1 pgid
	[ -f "$dir/kamailio.pgid" ] || return 1
	pgid=$(cat "$dir/kamailio.pgid")
	dir="$(cd "$dir" && pwd)"
	ours "$dir" "$pgid" && group_alive "$pgid"
}

case "${1:-}" in
start) [ -n "${2:-}" ] || die "usage: bench.sh start DIR"; cmd_start "$2" ;;
stop) [ -n "${2:-}" ] || die "usage: bench.sh stop DIR"; cmd_stop "$2" ;;
restart) [ -n "${2:-}" ] || die "usage: bench.sh restart DIR"; cmd_restart "$2" ;;
status) [ -n "${2:-}" ] || die "usage: bench.sh status DIR"; cmd_status "$2" ;;
*) die "usage: bench.sh start|stop|restart|status DIR" ;;
esac
