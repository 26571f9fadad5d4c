"""The flows `mirrorcap find --flows` lists, whichever engine found them: one line each, or JSON."""

from __future__ import annotations

import json


def print_flows(views: list[dict], as_json: bool) -> None:
    for v in views:
        if as_json:
            print(json.dumps(v))
        else:
            ports = f":{v['sport']} > {v['dst']}:{v['dport']}" if v["sport"] is not None else f" > {v['dst']}"
            print(f"{v['first']}  {v['last']}  {v['fam']:4} {str(v['proto']):5} {v['src']}{ports}  "
                  f"vni={v['vni']}  {v['packets']} pkts {v['bytes']} B  {v['file']}")
