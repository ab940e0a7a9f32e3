#!/bin/sh
# Lays out the community-chat package's files under DEST exactly as the
# package installs them on a router.  Both the recipe's Package/install
# (openwrt/net/community-chat/Makefile) and `make openwrt-stage` run this
# script, so the package and the staged tree cannot drift apart.
#
# usage: stage.sh SRC DEST
#   SRC   a checkout of this repository (app/, node/, templates/, static/)
#   DEST  the package's root: $(1) in the recipe, DESTDIR in the Makefile
set -eu

if [ $# -ne 2 ]; then
	echo "usage: $0 SRC DEST" >&2
	exit 2
fi
src=$1
dest=$2
files=$src/openwrt/net/community-chat/files
lib=$dest/usr/lib/community-chat

# Python modules (sources: the router compiles them on first start), the
# page templates, the page's own JS/CSS/icons and the compiled translation
# catalogues (locale/*/LC_MESSAGES/*.mo), nothing else: no tests, no caches.
copy_tree() { # <folder> <find name pattern>
	(cd "$src" && find "$1" -type f -name "$2" ! -path '*/__pycache__/*') |
		sort | while IFS= read -r f; do
		install -d -m 0755 "$lib/${f%/*}"
		install -m 0644 "$src/$f" "$lib/$f"
	done
}

install -d -m 0755 "$lib"
copy_tree app '*.py'
copy_tree node '*.py'
copy_tree templates '*.tpl'
copy_tree static '*'
copy_tree locale '*.mo'

install -d -m 0755 "$dest/etc/init.d" "$dest/etc/config" "$dest/etc/uci-defaults"
install -m 0755 "$files/community-chat.init" "$dest/etc/init.d/community-chat"
install -m 0644 "$files/community-chat.config" "$dest/etc/config/community-chat"
install -m 0755 "$files/community-chat.uci-defaults" "$dest/etc/uci-defaults/90-community-chat"
