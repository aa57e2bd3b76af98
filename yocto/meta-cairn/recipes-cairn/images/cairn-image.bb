SUMMARY = "A Cairn storage appliance image"
DESCRIPTION = "The smallest image that boots, takes a DHCP address on the \
               wired port and runs cairnd: systemd, the kernel and cairnd, \
               with a read-only root file system; state lives in \
               /var/lib/cairn and on the data disks."
HOMEPAGE = "https://example.invalid/cairn"
BUGTRACKER = "https://example.invalid/cairn/issues"
SECTION = "images"
CVE_PRODUCT = "cairn-image"
LICENSE = "MIT"

inherit core-image

IMAGE_INSTALL = "packagegroup-core-boot cairnd ${CORE_IMAGE_EXTRA_INSTALL}"
IMAGE_FEATURES += "read-only-rootfs"
IMAGE_LINGUAS = ""
