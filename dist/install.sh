#!/bin/sh
# make install / make uninstall. install puts crisp's files in place and writes a manifest of
# every file (with its sha256) and directory it created; uninstall removes exactly those,
# keeping any file changed since (it says which). DESTDIR stages into another root.
#   install.sh install|uninstall   env: DESTDIR PREFIX CRISP_BIN UNITDIR CNI_CONF_DIR
set -eu

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
UNITDIR=${UNITDIR:-/etc/systemd/system}
CNI_CONF_DIR=${CNI_CONF_DIR:-/etc/cni/net.d}
SRC=$(cd "$(dirname "$0")/.." && pwd)
MANIFEST=$PREFIX/share/crisp/install-manifest

say() { printf 'crisp %s: %s\n' "$ACTION" "$*"; }

# mkdirs DIR: creates DIR and its missing parents, recording each one created (top first).
mkdirs() {
    missing=""
    d=$1
    while [ ! -d "$DESTDIR$d" ]; do
        missing="$d $missing"
        d=$(dirname "$d")
    done
    for d in $missing; do
        mkdir -m 0755 "$DESTDIR$d"
        echo "dir $d" >>"$TMP_MANIFEST"
    done
}

# put SRC DEST MODE: installs one file and records it.
put() {
    mkdirs "$(dirname "$2")"
    install -m "$3" "$1" "$DESTDIR$2"
    echo "file $(sha256sum "$DESTDIR$2" | cut -d' ' -f1) $2" >>"$TMP_MANIFEST"
    say "installed $DESTDIR$2"
}

do_install() {
    : "${CRISP_BIN:?CRISP_BIN must name the crisp binary to install}"
    [ -x "$CRISP_BIN" ] || { echo "crisp install: $CRISP_BIN is not an executable; run make build" >&2; exit 1; }
    if [ -f "$DESTDIR$MANIFEST" ]; then
        say "an earlier install is recorded in $DESTDIR$MANIFEST: removing it first"
        ACTION=uninstall do_uninstall
    fi
    TMP_MANIFEST=$(mktemp)
    trap 'rm -f "$TMP_MANIFEST"' EXIT
    mkdirs "$(dirname "$MANIFEST")"
    # Installed stripped: the release build's debug info (most of its size) serves no
    # running node; target/release/crisp keeps it for debugging.
    bin=$(mktemp)
    strip -o "$bin" "$CRISP_BIN"
    put "$bin" "$PREFIX/bin/crisp" 0755
    rm -f "$bin"
    unit=$(mktemp)
    sed "s|@BINDIR@|$PREFIX/bin|g" "$SRC/dist/crisp.service.in" >"$unit"
    put "$unit" "$UNITDIR/crisp.service" 0644
    rm -f "$unit"
    has_conf=""
    for f in "$DESTDIR$CNI_CONF_DIR"/*.conf "$DESTDIR$CNI_CONF_DIR"/*.conflist "$DESTDIR$CNI_CONF_DIR"/*.json; do
        [ -e "$f" ] && has_conf=yes
    done
    if [ -n "$has_conf" ]; then
        say "kept $DESTDIR$CNI_CONF_DIR: it already holds a CNI conf"
    else
        put "$SRC/cni-conf/10-crisp.conflist" "$CNI_CONF_DIR/10-crisp.conflist" 0644
    fi
    if [ -e "$DESTDIR/etc/crictl.yaml" ]; then
        say "kept $DESTDIR/etc/crictl.yaml: it already exists"
    else
        put "$SRC/dist/crictl.yaml" "/etc/crictl.yaml" 0644
    fi
    install -m 0644 "$TMP_MANIFEST" "$DESTDIR$MANIFEST"
    say "recorded in $DESTDIR$MANIFEST (make uninstall reverses it)"
    [ -n "$DESTDIR" ] || say "next: systemctl daemon-reload && systemctl enable --now crisp"
}

do_uninstall() {
    if [ ! -f "$DESTDIR$MANIFEST" ]; then
        say "nothing recorded in $DESTDIR$MANIFEST: nothing to remove"
        return 0
    fi
    # Files first, newest first; then the manifest; then the directories install created.
    tac "$DESTDIR$MANIFEST" | while read -r kind sum path; do
        [ "$kind" = file ] || continue
        if [ ! -e "$DESTDIR$path" ]; then
            say "already gone: $DESTDIR$path"
        elif [ "$(sha256sum "$DESTDIR$path" | cut -d' ' -f1)" = "$sum" ]; then
            rm -f "$DESTDIR$path"
            say "removed $DESTDIR$path"
        else
            say "kept $DESTDIR$path: changed since install"
        fi
    done
    dirs=$(tac "$DESTDIR$MANIFEST" | awk '$1 == "dir" { print $2 }')
    rm -f "$DESTDIR$MANIFEST"
    for d in $dirs; do
        rmdir "$DESTDIR$d" 2>/dev/null && say "removed $DESTDIR$d/" || true
    done
}

ACTION=${1:-}
case "$ACTION" in
install) do_install ;;
uninstall) do_uninstall ;;
*) echo "usage: $0 install|uninstall" >&2; exit 2 ;;
esac
