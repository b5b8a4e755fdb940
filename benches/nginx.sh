# Sourced by the benches that need a web server: nginx_start DIR WORKERS HTTP writes
# DIR/nginx.conf with HTTP as the body of its http block (logs in DIR/logs) and
# starts nginx in the foreground of a background job; its pid is in NGINX_PID.
nginx_start() {
  local dir=$1 workers=$2 http=$3
  mkdir -p "$dir/logs"
  cat > "$dir/nginx.conf" <<NGINX
user root;
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events { worker_connections 256; }
http {
$http
}
NGINX
  nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' &
  NGINX_PID=$!
}
