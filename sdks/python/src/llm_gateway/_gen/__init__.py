"""Generated stubs, vendored from the gateway's gen/ by tools/vendor_stubs.py."""
