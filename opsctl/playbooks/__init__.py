"""Ansible inventories generated from the stack spec (``opsctl playbooks inventory``)."""

from opsctl.playbooks.inventory import (
    GENERATED_FILE,
    PLAYBOOKS_DIR,
    Inventory,
    build_inventory,
    default_inventory_dir,
    write_inventory,
)

__all__ = [
    "GENERATED_FILE",
    "PLAYBOOKS_DIR",
    "Inventory",
    "build_inventory",
    "default_inventory_dir",
    "write_inventory",
]
