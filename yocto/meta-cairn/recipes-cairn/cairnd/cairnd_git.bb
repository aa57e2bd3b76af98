SUMMARY = "Cairn storage node"
DESCRIPTION = "cairnd pools the box's disks into shard storage for a swarm \
               of Cairn nodes, shows the node's health on an LED and answers \
               a button; cairn is the owner's tool."
HOMEPAGE = "https://example.invalid/cairn"
BUGTRACKER = "https://example.invalid/cairn/issues"
SECTION = "net"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=e1491ce483907fd9f87b38865acdbcac"

CVE_PRODUCT = "cairnd"

PV = "0.1.0+git"
SRC_URI = "git://example.invalid/cairn.git;protocol=https;branch=main"
# A product pins the commit it ships in a bbappend; see the layer's README.
SRCREV = "${AUTOREV}"

require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates systemd useradd

# The workspace holds the library crates and board-support; only the
# binaries of the `cairn` package are installed.
CARGO_BUILD_FLAGS += "--package cairn --bin cairnd --bin cairn"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/cairnd.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/cairnd.socket ${D}${systemd_system_unitdir}/
    install -d ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/systemd/sysusers.d/cairn.conf ${D}${nonarch_libdir}/sysusers.d/
    install -m 0644 ${S}/systemd/tmpfiles.d/cairn.conf ${D}${nonarch_libdir}/tmpfiles.d/
    install -d ${D}${nonarch_libdir}/sysctl.d
    install -m 0644 ${S}/systemd/sysctl.d/cairn.conf ${D}${nonarch_libdir}/sysctl.d/60-cairn.conf
    install -d ${D}${nonarch_base_libdir}/udev/rules.d
    install -m 0644 ${S}/systemd/udev/99-cairn.rules ${D}${nonarch_base_libdir}/udev/rules.d/
    install -d ${D}${nonarch_libdir}/cairn
    install -m 0755 ${S}/systemd/cairn-adopt-disk ${D}${nonarch_libdir}/cairn/
    install -d ${D}${sysconfdir}/cairn
    install -m 0644 ${S}/systemd/cairnd.toml ${D}${sysconfdir}/cairn/
}

SYSTEMD_SERVICE:${PN} = "cairnd.service cairnd.socket"

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/cairn --no-create-home --shell /sbin/nologin --user-group cairn"

FILES:${PN} += "${nonarch_libdir}/sysusers.d \
                ${nonarch_libdir}/tmpfiles.d \
                ${nonarch_libdir}/sysctl.d \
                ${nonarch_base_libdir}/udev/rules.d \
                ${nonarch_libdir}/cairn \
"
CONFFILES:${PN} = "${sysconfdir}/cairn/cairnd.toml"

# cairn-adopt-disk finds a disk's file system UUID with blkid.
RDEPENDS:${PN} = "util-linux-blkid"
