# bitmapist-server %post: $1 is 1 on a first installation, 2 on an upgrade.
# A first installation enables bitmapist.service and starts it (as the deb
# does); an upgrade only reloads the units (the old package's %postun
# restarts the service).
if command -v systemctl >/dev/null 2>&1; then
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || :
	fi
	if [ "$1" -eq 1 ]; then
		if [ -d /run/systemd/system ]; then
			systemctl enable --now bitmapist.service >/dev/null 2>&1 || :
		else
			systemctl enable bitmapist.service >/dev/null 2>&1 || :
		fi
	fi
fi
exit 0
