"""Device profiles: the read (and optionally write) limits an emulated device is throttled to.

Plain data and validation; nothing here touches the system.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MiB", "Profile", "PROFILES", "get_profile"]

MiB = 1 << 20


@dataclass(frozen=True)
class Profile:
    """Limits of an emulated device. ``None`` write limits leave writes unthrottled.

    read_iops (int): read requests per second (after the block layer splits requests at 1280 KiB).
    read_bps (int): read bytes per second.
    write_iops, write_bps (int | None): the same for writes (cgroup v1: direct writes only).
    rotational (bool): value for the loop device's ``queue/rotational`` flag.
    """

    name: str
    read_iops: int
    read_bps: int
    write_iops: int | None = None
    write_bps: int | None = None
    rotational: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        for field in ("read_iops", "read_bps", "write_iops", "write_bps"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Profile {self.name!r}: {field} must be a positive int, not {value!r}")

    def summary(self) -> str:
        """'110 read IOPS, 170 MB/s' and the write limits where set."""
        text = f"{self.read_iops:,} read IOPS, {self.read_bps / 1e6:g} MB/s"
        if self.write_iops is not None or self.write_bps is not None:
            text += f"; writes {self.write_iops or 'unlimited'} IOPS, "
            text += f"{self.write_bps / 1e6:g} MB/s" if self.write_bps else "unlimited MB/s"
        return text


PROFILES: dict[str, Profile] = {
    "hdd": Profile("hdd", 110, 170_000_000, rotational=True,
                   description="7,200 rpm desktop hard disk (WD Black): 110 random IOPS, 170 MB/s"),
    "sata-ssd": Profile("sata-ssd", 10_000, 550_000_000, rotational=False,
                        description="SATA SSD (Samsung 850 PRO): 10,000 IOPS, 550 MB/s"),
}


def get_profile(profile: str | Profile) -> Profile:
    """A :class:`Profile` by name (``PROFILES``), or the given one unchanged."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown device profile {profile!r}; use one of {', '.join(PROFILES)} "
                         "or pass a recpack.bench.emulate.Profile") from None
