#!/bin/sh
# Render the page from the environment the image inherited from its base, then serve it.
# PORT (default 80) lets the page be served without privileges or next to another server.
set -e
mkdir -p /www
cat > /www/index.html <<HTML
<!DOCTYPE html>
<html>
<head><title>Hello World</title></head>
<body>
<h1>Hello World</h1>
<p>Node version: $NODE_VERSION</p>
</body>
</html>
HTML
if [ "$1" = "--render-only" ]; then
    cat /www/index.html
    exit 0
fi
exec httpd -f -p "${PORT:-80}" -h /www
