"""Kong 2.8.1's DNS client for the kong stand-in: answers cached for their TTL, as Kong does.

Kong resolves a service's host through its own client (kong/resty/dns/client.lua), not the
system resolver, and keeps each answer for the answer's TTL: Docker's embedded DNS answers a
container name with TTL 600 (moby libnetwork/resolver.go:66 `respTTL = 600`, set on every A
record in handleIPQuery), so Kong keeps proxying to a container's old address for up to ten
minutes after the container got a new one. What is copied (client.lua at tag 2.8.1 unless
another file is named):

- nameservers from KONG_DNS_RESOLVER (``ip[:port]`` list, port 53 by default;
  kong/tools/dns.lua:15-21), else the ``nameserver`` lines of /etc/resolv.conf; attempts,
  timeout, ndots and search from resolv.conf, with OpenResty's defaults 5 attempts, 2000 ms,
  ndots 1 (client.lua:597-620);
- KONG_DNS_HOSTSFILE (default /etc/hosts) entries cached for 10 years (client.lua:513);
- the record types of KONG_DNS_ORDER (default LAST,SRV,A,CNAME, kong.conf.default:1288), each
  tried for the bare name and the search domains (client.lua:1036-1100); LAST is the type that
  answered last time; the error reported is the last one met (client.lua:1136-1260);
- the cache (client.lua:159-249): records for their lowest TTL, or KONG_DNS_VALID_TTL when set
  (kong.conf.default:1294); a name error or an empty answer for KONG_DNS_NOT_FOUND_TTL (30 s),
  other errors for KONG_DNS_ERROR_TTL (1 s), neither replacing records still held; every entry
  is kept KONG_DNS_STALE_TTL (4 s) past its expiry, and a stale entry is served while a
  background query refreshes it (client.lua:905-936);
- one query per name and type at a time (KONG_DNS_NO_SYNC off): a second caller waits for the
  first, up to timeout x attempts, then tries once more (client.lua:641-642, 819-891);
- the try list Kong logs with a failure (client.lua:310-365) and lua-resty-dns v0.22's error
  texts (resolver.lua:79-85, 857-905).

Not copied: the LRU's size limit, TCP after a truncated answer, SRV weights (plain round robin).
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

TYPE_A, TYPE_CNAME, TYPE_AAAA, TYPE_SRV = 1, 5, 28, 33
TYPE_LAST = -1
TYPE_NAMES = {"LAST": TYPE_LAST, "SRV": TYPE_SRV, "A": TYPE_A, "AAAA": TYPE_AAAA,
              "CNAME": TYPE_CNAME}
# lua-resty-dns resolver.lua:79-85.
RCODE_TEXT = {1: "format error", 2: "server failure", 3: "name error", 4: "not implemented",
              5: "refused"}
EMPTY_RECORD = "dns client error: 101 empty record received"
NAME_ERROR = "dns server error: 3 name error"
HOSTS_TTL = 10 * 365 * 24 * 60 * 60
POOL_MAX_RETRY = 1  # client.lua:641


@dataclass(frozen=True)
class Record:
    """One answer record: an address, a CNAME target or an SRV target and port."""

    type: int
    name: str
    ttl: float
    address: str | None = None
    target: str | None = None
    port: int = 0


@dataclass
class Answer:
    """A server's answer: records, or Kong's error code (a DNS rcode) and text."""

    records: list[Record]
    errcode: int | None = None
    errstr: str | None = None
    expire: float = 0.0
    cursor: int = -1  # round robin position (client.lua roundRobin)

    def expired(self, now: float) -> bool:
        """True once the entry is past its TTL (it may still be served stale)."""
        return self.expire < now


@dataclass(frozen=True)
class DnsConfig:
    """What Kong's DNS client is configured with (kong/tools/dns.lua, resolv.conf)."""

    nameservers: tuple[tuple[str, int], ...]
    attempts: int = 5
    timeout: float = 2.0
    ndots: int = 1
    search: tuple[str, ...] = ()
    order: tuple[int, ...] = (TYPE_LAST, TYPE_SRV, TYPE_A, TYPE_CNAME)
    valid_ttl: float | None = None
    stale_ttl: float = 4.0
    not_found_ttl: float = 30.0
    error_ttl: float = 1.0
    no_sync: bool = False
    hosts: tuple[tuple[str, str], ...] = ()

    @property
    def pool_max_wait(self) -> float:
        """How long a caller waits for another's query (client.lua:642)."""
        return self.timeout * self.attempts


def _float_env(environ: dict[str, str], name: str, default: float | None) -> float | None:
    value = (environ.get(name) or "").strip()
    return float(value) if value else default


def parse_resolv_conf(text: str) -> dict[str, list[str]]:
    """nameserver, search/domain and options lines, as lists of words."""
    out: dict[str, list[str]] = {"nameserver": [], "search": [], "options": []}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        key, rest = words[0], words[1:]
        if key == "nameserver" and rest:
            out["nameserver"].append(rest[0])
        elif key in ("search", "domain"):
            out["search"] = rest
        elif key == "options":
            out["options"] += rest
    return out


def parse_hosts(text: str) -> tuple[tuple[str, str], ...]:
    """(name, IPv4 address) pairs of a hosts file; the first address of a name wins."""
    seen: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        try:
            if ipaddress.ip_address(words[0]).version != 4:
                continue
        except ValueError:
            continue
        for name in words[1:]:
            seen.setdefault(name.lower(), words[0])
    return tuple(seen.items())


def _server(entry: str) -> tuple[str, int]:
    """'ip', 'ip:port' or '[ipv6]:port' as (ip, port)."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, port = entry[1:].partition("]")
        return host, int(port.lstrip(":") or 53)
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, 53


def config_from_env(environ: dict[str, str], read: Callable[[str], str]) -> DnsConfig:
    """The client's configuration from Kong's environment and the container's files."""
    try:
        resolv = parse_resolv_conf(read("/etc/resolv.conf"))
    except OSError:
        resolv = {"nameserver": [], "search": [], "options": []}
    options = dict(o.split(":", 1) for o in resolv["options"] if ":" in o)
    listed = [s for s in (environ.get("KONG_DNS_RESOLVER") or "").split(",") if s.strip()]
    servers = tuple(_server(s) for s in listed) if listed else tuple(
        (ns, 53) for ns in resolv["nameserver"] if ":" not in ns)
    order = tuple(TYPE_NAMES[t.strip().upper()] for t in
                  (environ.get("KONG_DNS_ORDER") or "LAST,SRV,A,CNAME").split(",")
                  if t.strip().upper() in TYPE_NAMES)
    try:
        hosts = parse_hosts(read(environ.get("KONG_DNS_HOSTSFILE") or "/etc/hosts"))
    except OSError:
        hosts = ()
    return DnsConfig(
        nameservers=servers,
        attempts=int(options.get("attempts", 5)),
        timeout=float(options.get("timeout", 2)),
        ndots=int(options.get("ndots", 1)),
        search=tuple(d for d in resolv["search"] if d != "."),
        order=order or (TYPE_LAST, TYPE_SRV, TYPE_A, TYPE_CNAME),
        valid_ttl=_float_env(environ, "KONG_DNS_VALID_TTL", None),
        stale_ttl=_float_env(environ, "KONG_DNS_STALE_TTL", 4.0) or 0.0,
        not_found_ttl=_float_env(environ, "KONG_DNS_NOT_FOUND_TTL", 30.0) or 0.0,
        error_ttl=_float_env(environ, "KONG_DNS_ERROR_TTL", 1.0) or 0.0,
        no_sync=(environ.get("KONG_DNS_NO_SYNC") or "off").lower() in ("on", "true"),
        hosts=hosts,
    )


# --- the wire format -------------------------------------------------------------------------


def build_query(qid: int, name: str, qtype: int) -> bytes:
    """A recursive query for one name and type."""
    labels = b"".join(bytes([len(p)]) + p.encode("idna") for p in name.rstrip(".").split(".")
                      if p)
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\x00" + struct.pack(
        ">HH", qtype, 1)


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    """A possibly compressed name at pos; (name, position after it)."""
    labels: list[str] = []
    end = -1
    for _ in range(128):
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        if length == 0:
            pos += 1
            break
        labels.append(data[pos + 1:pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    return ".".join(labels).lower(), (end if end >= 0 else pos)


def parse_response(data: bytes, qid: int) -> Answer | None:
    """The answer section of a response to query qid; None for another id."""
    if len(data) < 12:
        raise ValueError("truncated")
    rid, flags, qdcount, ancount = struct.unpack(">HHHH", data[:8])
    if rid != qid:
        return None
    pos = 12
    for _ in range(qdcount):
        _, pos = _read_name(data, pos)
        pos += 4
    records: list[Record] = []
    for _ in range(ancount):
        name, pos = _read_name(data, pos)
        rtype, _cls, ttl, length = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        rdata = data[pos:pos + length]
        if rtype == TYPE_A and length == 4:
            records.append(Record(rtype, name, ttl, address=socket.inet_ntoa(rdata)))
        elif rtype == TYPE_AAAA and length == 16:
            records.append(Record(rtype, name, ttl,
                                  address=socket.inet_ntop(socket.AF_INET6, rdata)))
        elif rtype == TYPE_CNAME:
            records.append(Record(rtype, name, ttl, target=_read_name(data, pos)[0]))
        elif rtype == TYPE_SRV and length >= 7:
            port = struct.unpack(">H", rdata[4:6])[0]
            records.append(Record(rtype, name, ttl, target=_read_name(data, pos + 6)[0],
                                  port=port))
        pos += length
    rcode = flags & 0x0F
    if rcode:
        return Answer(records, rcode, RCODE_TEXT.get(rcode, "unknown"))
    return Answer(records)


def udp_query(config: DnsConfig, name: str, qtype: int, start: int = 0
              ) -> tuple[Answer | None, str | None]:
    """Ask the nameservers in turn, `attempts` times in all (lua-resty-dns query())."""
    if not config.nameservers:
        return None, "failed to create a resolver: no nameservers specified"
    err = "unknown"
    for attempt in range(config.attempts):
        host, port = config.nameservers[(start + attempt) % len(config.nameservers)]
        server = f"{host}:{port}"
        qid = random.randrange(1, 0xFFFF)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(config.timeout)
            try:
                sock.connect((host, port))
                sock.send(build_query(qid, name, qtype))
            except OSError as exc:
                err = f"failed to send request to UDP server {server}: {_reason(exc)}"
                continue
            deadline = time.monotonic() + config.timeout
            while True:
                try:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    answer = parse_response(sock.recv(4096), qid)
                except TimeoutError:
                    err = f"failed to receive reply from UDP server {server}: timeout"
                    break
                except OSError as exc:
                    err = f"failed to receive reply from UDP server {server}: {_reason(exc)}"
                    break
                except (ValueError, IndexError, struct.error):
                    err = "truncated"
                    break
                if answer is not None:
                    return answer, None
    return None, err


def _reason(exc: OSError) -> str:
    """The short reason ngx's cosockets give (e.g. 'connection refused')."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return (exc.strerror or type(exc).__name__).lower()


# --- the cache and the lookups ---------------------------------------------------------------


class TryList:
    """What was tried, as Kong prints it after "Tried: " (client.lua:310-365)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, list[str]]] = []
        self._lock = threading.Lock()

    def add(self, qname: str, qtype: int | None, status: str) -> None:
        """A new entry for one name and type."""
        with self._lock:
            self.entries.append((qname, "(na)" if qtype is None else str(qtype), [status]))

    def status(self, text: str) -> None:
        """Append a status to the last entry."""
        with self._lock:
            if self.entries:
                self.entries[-1][2].append(text)

    def tried(self, qname: str, qtype: int) -> bool:
        """True when this name and type were tried already (recursion)."""
        return any(e[0] == qname and e[1] == str(qtype) for e in self.entries)

    def __str__(self) -> str:
        with self._lock:
            parts = []
            for qname, qtype, msgs in self.entries:
                message = "/".join(msgs).replace('"', "'")
                parts.append(f"{qname}:{qtype}" + (f" - {message}" if message else ""))
        return '["' + '","'.join(parts) + '"]'


@dataclass
class _Query:
    """One query in flight, shared by everyone asking the same name and type."""

    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer | None = None
    err: str | None = None


class DnsClient:
    """toip() as Kong 2.8.1's balancer calls it, with Kong's cache in between."""

    def __init__(self, config: DnsConfig,
                 query: Callable[[DnsConfig, str, int], tuple[Answer | None, str | None]]
                 = udp_query, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._query = query
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[object, str], tuple[Answer, float]] = {}  # entry, lru expiry
        self._last: dict[str, int] = {}
        self._inflight: dict[tuple[str, int], _Query] = {}
        forever = clock() + HOSTS_TTL
        for name, address in config.hosts:
            answer = Answer([Record(TYPE_A, name, HOSTS_TTL, address=address)], expire=forever)
            self._cache[(TYPE_A, name)] = (answer, forever)

    # cache --------------------------------------------------------------------------

    def _get(self, key: tuple[object, str]) -> Answer | None:
        with self._lock:
            found = self._cache.get(key)
            if found is None:
                return None
            if found[1] <= self._clock():
                del self._cache[key]
                return None
            return found[0]

    def _insert(self, answer: Answer, qname: str, qtype: object) -> None:
        """cacheinsert(): the TTL by kind of answer; errors never replace held records."""
        now = self._clock()
        key = (qtype, qname)
        if answer.records:
            ttl = (self.config.valid_ttl if self.config.valid_ttl is not None
                   else min(r.ttl for r in answer.records))
        elif answer.errcode == 3:
            ttl = self.config.not_found_ttl
        else:
            held = self._get(key)
            if held is not None and held.records:
                return
            ttl = self.config.error_ttl if answer.errcode else self.config.not_found_ttl
        answer.expire = now + ttl
        lru = ttl + self.config.stale_ttl
        with self._lock:
            if lru <= 0:
                self._cache.pop(key, None)
            else:
                self._cache[key] = (answer, now + lru)

    def _insert_short(self, answer: Answer, qname: str) -> None:
        """The records again under the short name, with the same expiry."""
        lru = answer.expire - self._clock() + self.config.stale_ttl
        with self._lock:
            if lru > 0:
                self._cache[("short", qname)] = (answer, self._clock() + lru)

    def _parse(self, qname: str, qtype: int, answer: Answer) -> Answer:
        """parseAnswer(): other names and types are cached on their own; ours are kept."""
        ours = [r for r in answer.records if r.type == qtype and r.name == qname.rstrip(".")]
        others: dict[tuple[int, str], list[Record]] = {}
        for record in answer.records:
            if record not in ours:
                others.setdefault((record.type, record.name), []).append(record)
        for (rtype, name), records in others.items():
            self._insert(Answer(records), name, rtype)
            with self._lock:
                self._last.setdefault(name, rtype)
        result = Answer(ours, answer.errcode, answer.errstr)
        self._insert(result, qname, qtype)
        return result

    # queries ------------------------------------------------------------------------

    def _async(self, qname: str, qtype: int, tries: TryList) -> _Query:
        """asyncQuery(): join the query in flight or start one in the background."""
        key = (qname, qtype)
        with self._lock:
            item = self._inflight.get(key)
            if item is not None:
                tries.status("in progress (async)")
                return item
            item = self._inflight[key] = _Query()
        tries.status("scheduled")

        def run() -> None:
            tries.status("querying")
            answer, err = self._query(self.config, qname, qtype)
            if answer is not None:
                item.answer = self._parse(qname, qtype, answer)
            item.err = err
            with self._lock:
                if self._inflight.get(key) is item:
                    del self._inflight[key]
            item.done.set()

        threading.Thread(target=run, name="kong-dns", daemon=True).start()
        return item

    def _sync(self, qname: str, qtype: int, tries: TryList,
              count: int = 1) -> tuple[Answer | None, str | None]:
        """syncQuery(): wait for the shared query; on failure try once more."""
        key = (qname, qtype)
        if self.config.no_sync:
            tries.status("querying")
            answer, err = self._query(self.config, qname, qtype)
            return (self._parse(qname, qtype, answer) if answer else None), err
        with self._lock:
            item = self._inflight.get(key)
        if item is None:
            item = self._async(qname, qtype, tries)
        else:
            tries.status("in progress (sync)")
        finished = item.done.wait(self.config.pool_max_wait)
        if finished and item.answer is not None:
            return item.answer, item.err
        err = item.err or ("timeout" if not finished else "unknown")
        tries.status(f"try {count} error: {err}")
        if count > POOL_MAX_RETRY:
            return None, f"dns lookup pool exceeded retries ({POOL_MAX_RETRY}): {err}"
        with self._lock:
            if self._inflight.get(key) is item:
                del self._inflight[key]
        return self._sync(qname, qtype, tries, count + 1)

    def _lookup(self, qname: str, qtype: int, tries: TryList
                ) -> tuple[Answer | None, str | None]:
        """lookup(): the cache, stale while refreshed, else a synchronous query."""
        entry = self._get((qtype, qname))
        if entry is None:
            tries.add(qname, qtype, "cache-miss")
            return self._sync(qname, qtype, tries)
        tries.add(qname, qtype, "cache-hit")
        if entry.expired(self._clock()):
            tries.status("stale")
            self._async(qname, qtype, tries)
        return entry, None

    def _names(self, qname: str) -> list[tuple[str, int]]:
        """search_iter(): each record type, with the search domains, in Kong's order."""
        search = () if qname.endswith(".") else self.config.search
        dots = qname.count(".")
        out: list[tuple[str, int]] = []
        done: set[int] = set()
        for configured in self.config.order:
            qtype: int | None = configured
            if qtype == TYPE_LAST:
                with self._lock:
                    qtype = self._last.get(qname)
            if qtype is None or qtype in done:
                continue
            done.add(qtype)
            suffixed = [f"{qname}.{d}" for d in search]
            out += [(n, qtype) for n in
                    ([*suffixed, qname] if dots < self.config.ndots else [qname, *suffixed])]
        return out

    def resolve(self, qname: str, tries: TryList) -> tuple[Answer | None, str | None]:
        """resolve(): the answer with records for qname, or the last error met."""
        qname = qname.lower()
        short = self._get(("short", qname))
        if short is not None:
            tries.add(f"(short){qname}", None, "cache-hit")
            if short.expired(self._clock()):
                tries.status("stale")
            elif short.records and short.records[0].type == TYPE_CNAME:
                tries.status("dereferencing")
                return self.resolve(short.records[0].target or "", tries)
            else:
                return short, None
        else:
            tries.add(f"(short){qname}", None, "cache-miss")
        err: str | None = None
        for name, qtype in self._names(qname):
            if tries.tried(name, qtype):
                err = "recursion detected"
                tries.status(err)
                continue
            answer, err = self._lookup(name, qtype, tries)
            if answer is not None:
                if answer.errcode:
                    err = f"dns server error: {answer.errcode} {answer.errstr}"
                elif not answer.records:
                    err = EMPTY_RECORD
                else:
                    with self._lock:
                        self._last[name] = qtype
                    self._insert_short(answer, qname)
                    if answer.records[0].type == TYPE_CNAME:
                        tries.status("dereferencing")
                        return self.resolve(answer.records[0].target or "", tries)
                    return answer, None
            tries.status(err or "unknown")
        with self._lock:
            self._last.pop(qname, None)
        return None, err

    def toip(self, host: str, port: int) -> tuple[str | None, int | str, TryList]:
        """(address, port, tries), or (None, error, tries) as Kong's toip() returns them."""
        tries = TryList()
        try:
            ipaddress.ip_address(host.strip("[]"))
            return host.strip("[]"), port, tries
        except ValueError:
            pass
        answer, err = self.resolve(host, tries)
        if answer is None:
            return None, err or "unknown", tries
        pick = self._pick(answer)
        if pick.type == TYPE_SRV:
            tries.status("dereferencing SRV")
            address, found, more = self.toip(pick.target or "", pick.port or port)
            tries.entries += more.entries
            return address, found, tries
        return pick.address, port, tries

    def _pick(self, answer: Answer) -> Record:
        """Round robin over the records of one answer (client.lua roundRobin)."""
        with self._lock:
            answer.cursor = (answer.cursor + 1) % len(answer.records)
            return answer.records[answer.cursor]


def client_from_environment() -> DnsClient:
    """The client as Kong configures it from its environment at start."""
    def read(path: str) -> str:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    return DnsClient(config_from_env(dict(os.environ), read))
