"""The 27 Rakuten product-type codes, their community label names and real train counts."""

from __future__ import annotations

from typing import Final

# Names are the community's labels (DESIGN §5), not official Rakuten names.
CLASS_NAMES: Final[dict[int, str]] = {
    10: "used books",
    40: "video games/CDs",
    50: "gaming accessories",
    60: "consoles",
    1140: "figurines",
    1160: "trading cards",
    1180: "role-play figurines",
    1280: "children's toys",
    1281: "board games",
    1300: "model making/RC",
    1301: "baby socks & clothing",
    1302: "outdoor games",
    1320: "childcare",
    1560: "furniture",
    1920: "household linen",
    1940: "groceries",
    2060: "decoration",
    2220: "pet supplies",
    2280: "newspapers & magazines",
    2403: "book/comic lots",
    2462: "second-hand video games",
    2522: "stationery",
    2582: "garden furniture",
    2583: "pool & spa",
    2585: "garden tools",
    2705: "new books",
    2905: "PC games (downloads)",
}

# Row counts per code in the full official train set (84,916 rows).
TRAIN_COUNTS: Final[dict[int, int]] = {
    10: 3116,
    40: 2508,
    50: 1681,
    60: 832,
    1140: 2671,
    1160: 3953,
    1180: 764,
    1280: 4870,
    1281: 2070,
    1300: 5045,
    1301: 807,
    1302: 2491,
    1320: 3241,
    1560: 5073,
    1920: 4303,
    1940: 803,
    2060: 4993,
    2220: 824,
    2280: 4760,
    2403: 4774,
    2462: 1421,
    2522: 4989,
    2582: 2589,
    2583: 10209,
    2585: 2496,
    2705: 2761,
    2905: 872,
}

PRDTYPECODES: Final[tuple[int, ...]] = tuple(CLASS_NAMES)
