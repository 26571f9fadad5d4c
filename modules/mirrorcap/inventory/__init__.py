"""The inventory: one HCL file in, a validated `Inventory` out (model.py), or every problem at once.

load.py reads and validates; fields.py checks one field at a time; hclfile.py
and inputfile.py read a file safely (regular, bounded, parsed as data only).
"""

from ..project import DEFAULT_INVENTORY
from .load import load, unbaked

__all__ = ["DEFAULT_INVENTORY", "load", "unbaked"]
