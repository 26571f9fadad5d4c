"""The pcap archive of a capture: the S3 objects the hosts upload,
found by the contract's key layout (contract.ARCHIVE_KEY), fetched and merged,
cut and filtered by the host's own mirrorcap-window code (hostcode.py).

index.py is pure (keys -> pcaps covering a window), s3.py the bucket reads,
window.py the whole `mirrorcap window` on top of both.
"""
