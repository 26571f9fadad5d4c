"""Terraform references written out instead of read from constructs.

Reading `resource.id` is a round trip to the jsii Node process (~0.6 ms);
with 15 per stack it was a tenth of synth time for 100 stacks. Every
resource here is a direct child of its stack, so its construct ID is its
logical ID and the reference is known. tests/synth/test_synth.py checks that every
reference in every synthesized stack names a declared resource.
"""

from __future__ import annotations


def ref(resource_type: str, name: str, attr: str = "id") -> str:
    return f"${{{resource_type}.{name}.{attr}}}"


def data_ref(data_type: str, name: str, attr: str) -> str:
    return f"${{data.{data_type}.{name}.{attr}}}"


# Inside a for_each resource: the key of the current element (a source ID).
EACH_KEY = "${each.key}"
