# capture/packet.py's decode(): link layer -> IPv4/IPv6 -> TCP/UDP, every bound checked against the captured length.
# The answer is a code (PACKET_TCP/PACKET_UDP with the segment in a C struct, or IGNORED/MALFORMED/FRAGMENT).

cdef enum:
    PACKET_IGNORED = 0
    PACKET_MALFORMED = 1
    PACKET_FRAGMENT = 2
    PACKET_TCP = 6
    PACKET_UDP = 17
    MAX_VLAN_TAGS = 8
    TCP_FIN = 0x01
    TCP_SYN = 0x02
    TCP_RST = 0x04
    TCP_ACK = 0x10


cdef struct Segment:
    uint8_t key[36]  # source address, destination address, both ports as on the wire (packet.Decoded's flow key)
    Py_ssize_t key_size
    uint32_t sport, dport, seq, ack
    int flags
    Py_ssize_t payload, payload_end, length


cdef inline bint _watched(const uint8_t* ports, uint32_t port) noexcept:
    return (ports[port >> 3] >> (port & 7)) & 1


cdef inline bint _vlan_tag(uint32_t ethertype) noexcept:
    return ethertype == 0x8100 or ethertype == 0x88A8 or ethertype == 0x9100 or ethertype == 0x9200


cdef inline bint _ipv6_family(uint32_t family) noexcept:
    return family == 10 or family == 23 or family == 24 or family == 28 or family == 30


cdef int decode_packet(int link, const uint8_t* buf, Py_ssize_t start, Py_ssize_t end, const uint8_t* ports,
                       Segment* s) noexcept:
    if link == 1:
        return _ethertype(buf, start + 12, start + 14, end, ports, s)
    if link == 113:
        return _ethertype(buf, start + 14, start + 16, end, ports, s)
    if link == 276:
        return _ethertype(buf, start, start + 20, end, ports, s)
    if link == 101 or link == 12 or link == 14:
        if start >= end:
            return PACKET_MALFORMED
        if buf[start] >> 4 == 4:
            return _ipv4(buf, start, end, ports, s)
        if buf[start] >> 4 == 6:
            return _ipv6(buf, start, end, ports, s)
        return PACKET_MALFORMED
    if link == 0 or link == 108:
        return _loopback(link, buf, start, end, ports, s)
    if link == 228:
        return _ipv4(buf, start, end, ports, s) if start < end and buf[start] >> 4 == 4 else PACKET_MALFORMED
    if link == 229:
        return _ipv6(buf, start, end, ports, s) if start < end and buf[start] >> 4 == 6 else PACKET_MALFORMED
    return PACKET_MALFORMED


cdef int _ethertype(const uint8_t* buf, Py_ssize_t type_at, Py_ssize_t payload_at, Py_ssize_t end,
                    const uint8_t* ports, Segment* s) noexcept:
    cdef uint32_t ethertype
    cdef int tags
    if type_at + 2 > end:
        return PACKET_MALFORMED
    ethertype = _be16(buf + type_at)
    for tags in range(MAX_VLAN_TAGS):
        if not _vlan_tag(ethertype):
            break
        if payload_at + 4 > end:
            return PACKET_MALFORMED
        ethertype = _be16(buf + payload_at + 2)
        payload_at += 4
    if ethertype == 0x0800:
        return _ipv4(buf, payload_at, end, ports, s)
    if ethertype == 0x86DD:
        return _ipv6(buf, payload_at, end, ports, s)
    return PACKET_MALFORMED if _vlan_tag(ethertype) else PACKET_IGNORED


cdef int _loopback(int link, const uint8_t* buf, Py_ssize_t start, Py_ssize_t end, const uint8_t* ports,
                   Segment* s) noexcept:
    cdef uint32_t family
    if start + 4 > end:
        return PACKET_MALFORMED
    if link == 108:
        family = _be32(buf + start)
    else:
        # NULL stores the family in the byte order of the machine that captured: a small number either way.
        family = buf[start] | (<uint32_t>buf[start + 1] << 8) | (<uint32_t>buf[start + 2] << 16) | (
            <uint32_t>buf[start + 3] << 24)
        if family > 0xFFFF:
            family = _be32(buf + start)
    if family == 2:
        return _ipv4(buf, start + 4, end, ports, s)
    if _ipv6_family(family):
        return _ipv6(buf, start + 4, end, ports, s)
    return PACKET_IGNORED


cdef int _ipv4(const uint8_t* buf, Py_ssize_t ip, Py_ssize_t end, const uint8_t* ports, Segment* s) noexcept:
    cdef Py_ssize_t header_length, ip_end
    cdef uint32_t total_length
    if ip + 20 > end:
        return PACKET_MALFORMED
    header_length = (buf[ip] & 0x0F) * 4
    if buf[ip] >> 4 != 4 or header_length < 20 or ip + header_length > end:
        return PACKET_MALFORMED
    if _be16(buf + ip + 6) & 0x3FFF:
        return PACKET_FRAGMENT
    total_length = _be16(buf + ip + 2)
    if total_length == 0:
        ip_end = end  # captured before segmentation offload: the captured bytes are the packet
    elif total_length < header_length:
        return PACKET_MALFORMED
    else:
        ip_end = ip + total_length
    memcpy(s.key, buf + ip + 12, 8)
    s.key_size = 12
    return _transport(buf, buf[ip + 9], ip + header_length, ip_end, end, ports, s)


cdef int _ipv6(const uint8_t* buf, Py_ssize_t ip, Py_ssize_t end, const uint8_t* ports, Segment* s) noexcept:
    cdef Py_ssize_t ip_end, at = ip + 40, length
    cdef uint32_t payload_length, next_header
    if ip + 40 > end or buf[ip] >> 4 != 6:
        return PACKET_MALFORMED
    payload_length = _be16(buf + ip + 4)
    ip_end = end if payload_length == 0 else ip + 40 + payload_length
    next_header = buf[ip + 6]
    while next_header != 6 and next_header != 17:
        if not (next_header == 0 or next_header == 43 or next_header == 60 or next_header == 135
                or next_header == 139 or next_header == 140 or next_header == 44 or next_header == 51):
            return PACKET_IGNORED
        if at + 8 > end:
            return PACKET_MALFORMED
        if next_header == 44:
            if _be16(buf + at + 2) & 0xFFF9:
                return PACKET_FRAGMENT
            length = 8
        elif next_header == 51:
            length = (buf[at + 1] + 2) * 4
        else:
            length = (buf[at + 1] + 1) * 8
        next_header = buf[at]
        at += length
    if at > ip_end:
        return PACKET_MALFORMED
    memcpy(s.key, buf + ip + 8, 32)
    s.key_size = 36
    return _transport(buf, next_header, at, ip_end, end, ports, s)


cdef int _transport(const uint8_t* buf, uint32_t protocol, Py_ssize_t at, Py_ssize_t ip_end, Py_ssize_t end,
                    const uint8_t* ports, Segment* s) noexcept:
    cdef Py_ssize_t payload, udp_length
    if protocol == 6:
        if at + 20 > end or at + 20 > ip_end:
            return PACKET_MALFORMED
        s.sport = _be16(buf + at)
        s.dport = _be16(buf + at + 2)
        if not _watched(ports, s.sport) and not _watched(ports, s.dport):
            return PACKET_IGNORED
        payload = at + (buf[at + 12] >> 4) * 4
        if payload < at + 20 or payload > ip_end or payload > end:
            return PACKET_MALFORMED
        s.seq = _be32(buf + at + 4)
        s.ack = _be32(buf + at + 8)
        s.flags = buf[at + 13]
        s.payload = payload
        s.payload_end = ip_end if ip_end < end else end
        s.length = ip_end - payload
        memcpy(s.key + s.key_size - 4, buf + at, 4)
        return PACKET_TCP
    if protocol == 17:
        if at + 8 > end:
            return PACKET_MALFORMED
        s.sport = _be16(buf + at)
        s.dport = _be16(buf + at + 2)
        if not _watched(ports, s.sport) and not _watched(ports, s.dport):
            return PACKET_IGNORED
        udp_length = _be16(buf + at + 4)
        if udp_length < 8 or at + udp_length > ip_end:
            return PACKET_MALFORMED
        s.seq = s.ack = 0
        s.flags = 0
        s.payload = at + 8
        s.payload_end = at + udp_length if at + udp_length < end else end
        s.length = udp_length - 8
        memcpy(s.key + s.key_size - 4, buf + at, 4)
        return PACKET_UDP
    return PACKET_IGNORED
