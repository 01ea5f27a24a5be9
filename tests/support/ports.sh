# ports.sh — sourced by the shell harnesses (tests/demo/demo.sh,
# tests/bench/bench.sh): loopback ports that are free right now, and a wait
# for a TCP listener. Not run on its own.

# free_port tcp|udp: a port the kernel just handed out for 127.0.0.1 (bound
# to port 0, then released). Without python3, a random port below Linux's
# ephemeral range (32768 and up), where no outgoing connection takes one.
free_port() {
	python3 - "$1" <<'PY' 2>/dev/null || echo $((20000 + RANDOM % 12000))
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
PY
}

# wait_tcp PORT [TRIES]: until something accepts on 127.0.0.1:PORT, trying
# every 50 ms (default 100 tries, 5 s); status 1 if nothing ever does.
wait_tcp() {
	local i
	for ((i = 0; i < ${2:-100}; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}
