#!/bin/sh
# PID 1 of the Shiplog test images (busybox sh).  Serves /www on port 8080 with busybox
# httpd and exits 0 at once on SIGTERM/SIGINT, so `docker stop` does not wait out the
# grace period (httpd as PID 1 would ignore SIGTERM).
trap 'kill "$pid" 2>/dev/null; exit 0' TERM INT
echo "serving /www on :8080: $(cat /www/index.html)"
httpd -f -p 8080 -h /www &
pid=$!
wait "$pid"
