#!/usr/bin/env python3
"""Writes a deterministic, game-server-like tree for scripts/bench.sh.

    bench_corpus.py DEST [--scale N] [--seed S]

The same seed and scale always give the same paths, bytes and mtimes. What a
Minecraft-style server directory holds, in the proportions that matter to a
backup tool (scale 1, about 0.9 GB):

- 100,000 small files of 200 B to 16 KiB (skewed small): YAML/JSON/TOML
  configs, per-player stats and data (some gzip-compressed NBT-like), old
  rotated logs (.log.gz), spread over a few hundred directories;
- 200 region files (r.X.Z.mca) of 1 to 8 MiB: an 8 KiB header, then chunks of
  zlib-compressed data in 4 KiB sectors, so almost incompressible;
- 80 jar files (real zip archives, deflated) of 20 KiB to 4 MiB;
- one large, growing server log (logs/latest.log, 150 MiB of text).

`--scale N` multiplies every count and the log's size by N, so the bytes and
the files grow together. A file DEST.corpus records what was
generated (beside it, not inside, so it is not archived); bench.sh reuses a
tree whose record matches.
"""

import argparse
import gzip
import os
import random
import struct
import sys
import zipfile
import zlib

VERSION = 1
MiB = 1 << 20
BASE_MTIME = 1_700_000_000  # fixed, so archives of the tree are reproducible

WORDS = (
    "spawn world nether end player block chunk entity item stack enabled "
    "disabled true false max min view distance difficulty peaceful easy normal "
    "hard gamemode survival creative motd server port online mode whitelist "
    "allow flight pvp seed level name type default generator settings ticks "
    "autosave interval compression threshold rate limit permission group admin "
    "moderator builder member guest prefix suffix chat format message join "
    "leave death kill teleport home warp kit balance economy shop price sell "
    "buy region claim owner trust build container access inventory armor "
    "health food saturation experience level potion effect duration amplifier"
).split()
NAMES = [
    "Steve", "Alex", "Notch", "Herobrine", "xX_Miner_Xx", "CraftyKid", "Redstoner",
    "BlockHead", "Pixel", "EnderLord", "Creeper99", "DiamondDan", "LavaLily",
    "Obsidian", "Nether_Ned", "GhastBuster", "SkyBuilder", "ZombieSlayer",
]
PLUGINS = [
    "Essentials", "LuckPerms", "WorldEdit", "WorldGuard", "Vault", "CoreProtect",
    "Dynmap", "Multiverse-Core", "GriefPrevention", "PlaceholderAPI", "ViaVersion",
    "ProtocolLib", "Citizens", "mcMMO", "Jobs", "ChestShop", "DiscordSRV",
    "Geyser-Spigot", "Floodgate", "AuthMe", "Shopkeepers", "Quests", "Towny",
    "Chunky", "spark", "TAB", "DecentHolograms", "Votifier", "BlueMap", "Lands",
]


class Gen:
    def __init__(self, root, scale, seed):
        self.root = root
        self.scale = scale
        self.rng = random.Random(seed)
        self.files = 0
        self.bytes = 0
        self.dirs = set()
        self.text_pool = self._text_pool(4 * MiB)

    # --- content ---------------------------------------------------------

    def _text_line(self):
        r = self.rng
        kind = r.randrange(4)
        if kind == 0:
            return f"{r.choice(WORDS)}-{r.choice(WORDS)}: {r.choice(WORDS)}\n"
        if kind == 1:
            return f'  "{r.choice(WORDS)}_{r.choice(WORDS)}": {r.randrange(100000)},\n'
        if kind == 2:
            return (f"    {r.choice(WORDS)}: {r.uniform(-30000, 30000):.3f}, "
                    f"{r.randrange(-64, 320)}, {r.uniform(-30000, 30000):.3f}\n")
        return (f"# {' '.join(r.choice(WORDS) for _ in range(r.randrange(3, 12)))} "
                f"{r.choice(NAMES)} {r.getrandbits(64):016x}\n")

    def _text_pool(self, size):
        parts, n = [], 0
        while n < size:
            line = self._text_line()
            parts.append(line)
            n += len(line)
        return "".join(parts).encode()

    def text(self, size):
        """Config-like text: a slice of the pool with fresh values mixed in."""
        start = self.rng.randrange(len(self.text_pool) - size - 1)
        head = self._text_line().encode()
        return (head + self.text_pool[start:start + size])[:size]

    def nbt_like(self, size):
        """Structured binary, about 3:1 compressible, like an NBT payload."""
        r = self.rng
        out = bytearray()
        while len(out) < size:
            tag = r.choice(WORDS).encode()
            out += struct.pack(">BH", r.randrange(1, 13), len(tag)) + tag
            if r.random() < 0.5:
                out += r.randbytes(r.randrange(4, 48))
            else:
                out += bytes([r.randrange(16)]) * r.randrange(8, 128)
        return bytes(out[:size])

    def small_size(self):
        # 200 B .. 16 KiB, skewed towards the small end (mean about 2 KiB).
        u = self.rng.random()
        return int(200 * (16384 / 200) ** (u * u))

    # --- files -----------------------------------------------------------

    def write(self, rel, data, mtime_offset=0):
        path = os.path.join(self.root, rel)
        d = os.path.dirname(path)
        if d not in self.dirs:
            os.makedirs(d, exist_ok=True)
            self.dirs.add(d)
        with open(path, "wb") as f:
            f.write(data)
        t = BASE_MTIME + mtime_offset
        os.utime(path, (t, t))
        self.files += 1
        self.bytes += len(data)

    def uuid(self):
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"

    def small_files(self, count):
        r = self.rng
        # (share of the files, directory maker, extension, content kind)
        kinds = [
            (12, lambda: "world/playerdata", ".dat", "gz"),
            (12, lambda: "world/stats", ".json", "text"),
            (12, lambda: "world/advancements", ".json", "text"),
            (12, lambda: "plugins/Essentials/userdata", ".yml", "text"),
            (30, lambda: (f"plugins/{r.choice(PLUGINS)}/data/"
                          f"{r.randrange(16):x}/{r.randrange(16):x}"), ".yml", "text"),
            (6, lambda: f"world/data/{r.choice(['maps', 'raids', 'structures'])}",
             ".dat", "gz"),
            (2, lambda: "logs", ".log.gz", "gzlog"),
            (14, lambda: f"config/{r.choice(PLUGINS).lower()}/{r.choice(WORDS)}",
             ".toml", "text"),
        ]
        weights = [k[0] for k in kinds]
        for i in range(count):
            share, mkdir, ext, content = r.choices(kinds, weights)[0]
            size = self.small_size()
            if content == "text":
                data = self.text(size)
            elif content == "gzlog":
                data = gzip.compress(self.text(size * 4), 6, mtime=0)
            else:
                data = gzip.compress(self.nbt_like(size * 3), 6, mtime=0)
            name = self.uuid() if ext != ".log.gz" else f"2024-{i % 12 + 1:02}-{i:06}"
            self.write(f"{mkdir()}/{name}{ext}", data, r.randrange(86400 * 365))

    def chunk_pool(self, count):
        """Compressed chunks (4-byte length, type 2 = zlib, data) to build regions from."""
        pool = []
        for _ in range(count):
            raw = self.nbt_like(self.rng.randrange(8 * 1024, 48 * 1024))
            z = zlib.compress(raw, 6)
            pool.append(struct.pack(">IB", len(z) + 1, 2) + z)
        return pool

    def regions(self, count):
        r = self.rng
        pool = self.chunk_pool(4096)
        dims = ["world/region", "world_nether/DIM-1/region", "world_the_end/DIM1/region",
                "world/entities", "world/poi"]
        for i in range(count):
            u = r.random()
            target = int(MiB * 8 ** (u * u))  # 1..8 MiB, mean about 2.4 MiB
            locations = bytearray(4096)
            body = bytearray()
            sector = 2
            slot = 0
            while 8192 + len(body) < target and slot < 1024:
                c = r.choice(pool)
                sectors = (len(c) + 4095) // 4096
                body += c + bytes(sectors * 4096 - len(c))
                locations[slot * 4:slot * 4 + 4] = struct.pack(">I", sector << 8 | sectors)
                sector += sectors
                slot += 1
            stamps = struct.pack(">1024I", *(BASE_MTIME + r.randrange(10**6)
                                             for _ in range(1024)))
            d = dims[i % len(dims)]
            self.write(f"{d}/r.{i // 32 - 16}.{i % 32 - 16}.mca",
                       bytes(locations) + stamps + bytes(body), r.randrange(86400 * 30))

    def jars(self, count):
        r = self.rng
        for i in range(count):
            u = r.random()
            target = int(20 * 1024 * (4 * 1024 / 20) ** (u * u))  # 20 KiB .. 4 MiB
            path = (f"plugins/{PLUGINS[i % len(PLUGINS)]}-{i}.jar" if i % 2 == 0 else
                    f"libraries/org/{r.choice(WORDS)}/{r.choice(WORDS)}/{i}/lib-{i}.jar")
            full = os.path.join(self.root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with zipfile.ZipFile(full, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
                z.writestr(zipfile.ZipInfo("META-INF/MANIFEST.MF", (2024, 1, 1, 0, 0, 0)),
                           b"Manifest-Version: 1.0\r\n")
                n = 0
                while os.fstat(z.fp.fileno()).st_size + n < target:
                    cls = (b"\xca\xfe\xba\xbe" + self.nbt_like(r.randrange(1024, 24 * 1024)))
                    name = f"{'/'.join(r.choice(WORDS) for _ in range(3))}/C{n}.class"
                    info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    z.writestr(info, cls)
                    n += len(cls) // 3
            t = BASE_MTIME + r.randrange(86400 * 30)
            os.utime(full, (t, t))
            self.files += 1
            self.bytes += os.path.getsize(full)

    def big_log(self, size):
        r = self.rng
        levels = ["INFO"] * 8 + ["WARN", "ERROR"]
        threads = ["Server thread", "Worker-Main-1", "Craft Scheduler Thread - 4", "Netty IO #2"]
        templates = [
            "{n} joined the game",
            "{n} left the game",
            "{n} issued server command: /{w} {w}",
            "{n}[/10.0.{a}.{b}:{p}] logged in with entity id {e} at ([world]{x:.3f}, {y}, {z:.3f})",
            "<{n}> {w} {w} {w}",
            "Can't keep up! Is the server overloaded? Running {a}ms or {b} ticks behind",
            "Saving chunks for level 'ServerLevel[world]'/minecraft:overworld",
            "[{P}] {w} {w} task completed in {a}ms",
            "{n} lost connection: Disconnected",
            "Villager {e} died, message: '{w} {w}'",
        ]
        path = os.path.join(self.root, "logs/latest.log")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        written = 0
        sec = 0
        with open(path, "wb") as f:
            while written < size:
                lines = []
                for _ in range(4096):
                    sec += r.randrange(3)
                    msg = r.choice(templates).format(
                        n=r.choice(NAMES), w=r.choice(WORDS), P=r.choice(PLUGINS),
                        a=r.randrange(256), b=r.randrange(256), p=r.randrange(1024, 65536),
                        e=r.randrange(10**6), x=r.uniform(-3e4, 3e4), y=r.randrange(-64, 320),
                        z=r.uniform(-3e4, 3e4))
                    lines.append(f"[{sec // 3600 % 24:02}:{sec // 60 % 60:02}:{sec % 60:02}] "
                                 f"[{r.choice(threads)}/{r.choice(levels)}]: {msg}\n")
                block = "".join(lines).encode()[:size - written]
                f.write(block)
                written += len(block)
        t = BASE_MTIME + 86400 * 365
        os.utime(path, (t, t))
        self.files += 1
        self.bytes += written

    def configs(self):
        for name in ["server.properties", "eula.txt", "ops.json", "whitelist.json",
                     "banned-players.json", "banned-ips.json", "bukkit.yml", "spigot.yml",
                     "paper.yml", "commands.yml", "permissions.yml", "help.yml"]:
            self.write(name, self.text(self.small_size()))

    def dir_mtimes(self):
        # Last, once nothing more is created in them.
        for d, _, _ in os.walk(self.root):
            os.utime(d, (BASE_MTIME, BASE_MTIME))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dest")
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()
    stamp = f"version={VERSION} seed={args.seed} scale={args.scale}\n"
    record = args.dest.rstrip("/") + ".corpus"
    if os.path.exists(record):
        with open(record) as f:
            if f.read() == stamp:
                print(f"{args.dest}: already generated ({stamp.strip()})")
                return
        sys.exit(f"{args.dest} holds another corpus; remove it first")
    if os.path.exists(args.dest) and os.listdir(args.dest):
        sys.exit(f"{args.dest} is not empty and has no {record}; remove it first")
    os.makedirs(args.dest, exist_ok=True)
    root = os.path.abspath(args.dest)
    g = Gen(root, args.scale, args.seed)
    s = args.scale
    g.configs()
    g.small_files(100_000 * s)
    g.regions(200 * s)
    g.jars(80 * s)
    g.big_log(150 * MiB * s)
    g.dir_mtimes()
    with open(record, "w") as f:
        f.write(stamp)
    print(f"{args.dest}: {g.files} files, {g.bytes / MiB:.0f} MiB ({stamp.strip()})")


if __name__ == "__main__":
    main()
