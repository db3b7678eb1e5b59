//! Answering one DNS query from the registry: decoding with hickory-proto, looking the
//! name up, and encoding the answer (truncated with TC when it does not fit a UDP
//! reply). Pure: no sockets, no clock, so it is tested and fuzzed directly.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tracing::debug;

use super::state::{Instance, Registry};

/// The smallest UDP payload every client takes (RFC 1035).
pub const MIN_UDP_SIZE: usize = 512;
/// The largest UDP payload this server sends, whatever the client's EDNS0 size.
pub const MAX_UDP_SIZE: usize = 4096;
/// The EDNS0 size this server announces.
const OWN_EDNS_SIZE: u16 = 1232;

/// The zone the server is authoritative for and the TTLs it answers with.
#[derive(Clone, Debug)]
pub struct Zone {
    domain: Name,
    ttl: u32,
    negative_ttl: u32,
}

/// Why a zone cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("`{domain}` is not a domain name: {reason}")]
pub struct ZoneError {
    domain: String,
    reason: String,
}

impl Zone {
    /// The zone `domain` (made fully qualified, lower case), answering with `ttl` seconds
    /// and `negative_ttl` for NXDOMAIN and empty answers.
    pub fn new(domain: &str, ttl: u32, negative_ttl: u32) -> Result<Zone, ZoneError> {
        let err = |reason: String| ZoneError { domain: domain.into(), reason };
        let mut name = Name::from_ascii(domain).map_err(|e| err(e.to_string()))?;
        name.set_fqdn(true);
        if name.is_root() {
            return Err(err("the root zone cannot be served".into()));
        }
        Ok(Zone { domain: name.to_lowercase(), ttl, negative_ttl })
    }

    /// The zone's name.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    fn soa(&self, serial: u64) -> Record {
        let child = |label: &str| Name::from_ascii(label).and_then(|l| l.append_domain(&self.domain));
        let mname = child("ns").unwrap_or_else(|_| self.domain.clone());
        let rname = child("hostmaster").unwrap_or_else(|_| self.domain.clone());
        // The serial is the applied index modulo 2^32 (RFC 1982 arithmetic wraps).
        let soa = SOA::new(mname, rname, serial as u32, 3600, 600, 86_400, self.negative_ttl);
        Record::from_rdata(self.domain.clone(), self.negative_ttl, RData::SOA(soa))
    }

    fn target(&self, service: &str, instance: &str) -> Option<Name> {
        Name::from_labels([instance.as_bytes(), service.as_bytes()]).ok()?.append_domain(&self.domain).ok()
    }
}

/// How the query came in: over UDP, answers are limited to the client's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A datagram: truncated with TC above 512 bytes or the client's EDNS0 size.
    Udp,
    /// A TCP stream: the full answer.
    Tcp,
}

/// What a name in the zone refers to.
enum Target<'a> {
    Apex,
    /// Instances of `service`; `single` when the name is one instance's.
    Instances {
        service: &'a str,
        instances: Vec<(&'a str, &'a Instance)>,
        single: Option<&'a Instance>,
    },
}

/// Answers the query in `packet`; `None` when it gets no answer at all (undecodable
/// without a header, or a response rather than a query). `rotate` picks the order of
/// multi-instance answers.
pub fn respond(
    zone: &Zone,
    registry: &Registry,
    packet: &[u8],
    transport: Transport,
    rotate: usize,
) -> Option<Vec<u8>> {
    let request = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(e) => {
            debug!(error = %e, len = packet.len(), "malformed DNS packet");
            return form_error(packet);
        }
    };
    if request.message_type() != MessageType::Query {
        return None;
    }
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_authoritative(true);
    response.add_queries(request.queries().iter().cloned());
    let client_size = match request.extensions() {
        Some(edns) => {
            let mut own = Edns::new();
            own.set_max_payload(OWN_EDNS_SIZE);
            response.set_edns(own);
            usize::from(edns.max_payload()).clamp(MIN_UDP_SIZE, MAX_UDP_SIZE)
        }
        None => MIN_UDP_SIZE,
    };
    match (request.op_code(), request.queries()) {
        (OpCode::Query, [query]) => answer(zone, registry, query, rotate, &mut response),
        (OpCode::Query, _) => {
            response.set_response_code(ResponseCode::FormErr);
        }
        _ => {
            response.set_response_code(ResponseCode::NotImp);
        }
    }
    let bytes = response.to_vec().ok()?;
    if transport == Transport::Udp && bytes.len() > client_size {
        return response.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// FORMERR for a packet that has at least a header and is not itself a response;
/// silence otherwise.
fn form_error(packet: &[u8]) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec().ok()
}

fn answer(zone: &Zone, registry: &Registry, query: &Query, rotate: usize, response: &mut Message) {
    let name = query.name().to_lowercase();
    if query.query_class() != DNSClass::IN || !zone.domain.zone_of(&name) {
        response.set_response_code(ResponseCode::Refused);
        return;
    }
    let negative = |response: &mut Message, code: ResponseCode| {
        response.set_response_code(code);
        response.add_name_server(zone.soa(registry.last_index()));
    };
    let Some(target) = lookup(zone, registry, &name) else {
        negative(response, ResponseCode::NXDomain);
        return;
    };
    let owner = query.name().clone();
    let qtype = query.query_type();
    match target {
        Target::Apex => {
            if qtype == RecordType::SOA {
                response.add_answer(zone.soa(registry.last_index()));
            } else {
                negative(response, ResponseCode::NoError);
            }
        }
        Target::Instances { service, mut instances, single } => {
            if !instances.is_empty() {
                let n = rotate % instances.len();
                instances.rotate_left(n);
            }
            let mut records = Vec::new();
            match qtype {
                RecordType::A | RecordType::AAAA | RecordType::ANY => {
                    for (_, inst) in &instances {
                        if let Some(r) = address(&owner, zone.ttl, inst.spec.address, qtype) {
                            records.push(r);
                        }
                    }
                }
                RecordType::SRV => {
                    for (name, inst) in &instances {
                        let Some(target) = zone.target(service, name) else { continue };
                        let srv = SRV::new(1, 1, inst.spec.port, target.clone());
                        records.push(Record::from_rdata(owner.clone(), zone.ttl, RData::SRV(srv)));
                        if let Some(a) = address(&target, zone.ttl, inst.spec.address, RecordType::ANY) {
                            response.add_additional(a);
                        }
                    }
                }
                RecordType::TXT => {
                    if let Some(inst) = single {
                        let txt = TXT::new(inst.spec.tags.clone());
                        records.push(Record::from_rdata(owner.clone(), zone.ttl, RData::TXT(txt)));
                    }
                }
                _ => {}
            }
            if records.is_empty() {
                negative(response, ResponseCode::NoError);
            } else {
                response.add_answers(records);
            }
        }
    }
}

/// An A or AAAA record for `addr` if it matches `qtype` (`ANY`: either).
fn address(owner: &Name, ttl: u32, addr: IpAddr, qtype: RecordType) -> Option<Record> {
    let rdata = match (addr, qtype) {
        (IpAddr::V4(a), RecordType::A | RecordType::ANY) => RData::A(A(a)),
        (IpAddr::V6(a), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(a)),
        _ => return None,
    };
    Some(Record::from_rdata(owner.clone(), ttl, rdata))
}

/// What `name` (lower case, inside the zone) names; `None`: nothing (NXDOMAIN).
fn lookup<'a>(zone: &Zone, registry: &'a Registry, name: &Name) -> Option<Target<'a>> {
    let depth = usize::from(name.num_labels()) - usize::from(zone.domain.num_labels());
    let labels: Vec<&[u8]> = name.iter().take(depth).collect();
    let text = |l: &[u8]| std::str::from_utf8(l).ok().map(str::to_owned);
    match labels.as_slice() {
        [] => Some(Target::Apex),
        [service] => {
            let (service, instances) = registry.service_entry(&text(service)?)?;
            Some(Target::Instances {
                service,
                instances: instances.iter().map(|(n, i)| (n.as_str(), i)).collect(),
                single: None,
            })
        }
        [srv, tcp] if *tcp == b"_tcp" => {
            let service = text(srv.strip_prefix(b"_")?)?;
            let (service, instances) = registry.service_entry(&service)?;
            Some(Target::Instances {
                service,
                instances: instances.iter().map(|(n, i)| (n.as_str(), i)).collect(),
                single: None,
            })
        }
        [sub, service] => {
            let (service, instances) = registry.service_entry(&text(service)?)?;
            let sub = text(sub)?;
            if let Some((name, inst)) = instances.get_key_value(&sub) {
                return Some(Target::Instances { service, instances: vec![(name.as_str(), inst)], single: Some(inst) });
            }
            let tagged: Vec<_> =
                instances.iter().filter(|(_, i)| i.spec.tags.contains(&sub)).map(|(n, i)| (n.as_str(), i)).collect();
            (!tagged.is_empty()).then_some(Target::Instances { service, instances: tagged, single: None })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::rdata::SRV;
    use proptest::prelude::*;
    use raft::StateMachine;

    use super::*;
    use crate::apps::dns::state::{DnsCommand, InstanceSpec};

    fn zone() -> Zone {
        Zone::new("service.local", 5, 7).unwrap()
    }

    fn registry(n: usize) -> Registry {
        let mut r = Registry::default();
        for i in 0..n {
            let address = if i == 1 { "fd00::2".parse().unwrap() } else { format!("10.0.0.{i}").parse().unwrap() };
            let tags = if i % 2 == 0 { vec!["even".into()] } else { vec!["odd".into(), "x".into()] };
            let spec = InstanceSpec { address, port: 8000 + i as u16, ttl: None, tags };
            r.apply(i as u64 + 1, DnsCommand::Register { service: "web".into(), instance: format!("i{i}"), spec });
        }
        r
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242).add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    fn ask(r: &Registry, name: &str, qtype: RecordType, transport: Transport) -> Message {
        let bytes = respond(&zone(), r, &query(name, qtype), transport, 0).expect("an answer");
        Message::from_vec(&bytes).expect("a valid answer")
    }

    #[test]
    fn a_aaaa_srv_txt_and_tags() {
        let r = registry(3);
        let m = ask(&r, "web.service.local.", RecordType::A, Transport::Udp);
        assert_eq!(m.id(), 4242);
        assert!(m.authoritative());
        assert_eq!(m.answers().len(), 2, "two IPv4 instances");
        let m = ask(&r, "WEB.service.local.", RecordType::AAAA, Transport::Udp);
        assert_eq!(m.answers().len(), 1);
        let m = ask(&r, "i2.web.service.local.", RecordType::A, Transport::Udp);
        assert_eq!(m.answers()[0].data(), &RData::A(A("10.0.0.2".parse().unwrap())));
        let m = ask(&r, "odd.web.service.local.", RecordType::AAAA, Transport::Udp);
        assert_eq!(m.answers().len(), 1, "the tag `odd` names i1");
        let m = ask(&r, "_web._tcp.service.local.", RecordType::SRV, Transport::Udp);
        assert_eq!(m.answers().len(), 3);
        assert_eq!(m.additionals().len(), 3, "every target's address");
        let ports: Vec<u16> = m
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::SRV(s) => Some(SRV::port(s)),
                _ => None,
            })
            .collect();
        assert_eq!(ports, vec![8000, 8001, 8002]);
        let m = ask(&r, "i1.web.service.local.", RecordType::TXT, Transport::Udp);
        assert_eq!(m.answers()[0].data(), &RData::TXT(TXT::new(vec!["odd".into(), "x".into()])));
    }

    #[test]
    fn nxdomain_nodata_and_refused() {
        let r = registry(1);
        let m = ask(&r, "nope.service.local.", RecordType::A, Transport::Udp);
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
        assert_eq!(m.name_servers()[0].ttl(), 7);
        let m = ask(&r, "web.service.local.", RecordType::MX, Transport::Udp);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
        assert_eq!(m.name_servers().len(), 1);
        let m = ask(&r, "i0.web.service.local.", RecordType::AAAA, Transport::Udp);
        assert_eq!((m.response_code(), m.answers().len()), (ResponseCode::NoError, 0));
        let m = ask(&r, "example.com.", RecordType::A, Transport::Udp);
        assert_eq!(m.response_code(), ResponseCode::Refused);
        let m = ask(&r, "service.local.", RecordType::SOA, Transport::Udp);
        assert_eq!(m.answers().len(), 1);
    }

    #[test]
    fn large_udp_answers_are_truncated_and_tcp_gets_all() {
        let r = registry(60);
        let udp = ask(&r, "web.service.local.", RecordType::SRV, Transport::Udp);
        assert!(udp.truncated());
        assert!(udp.answers().is_empty());
        let tcp = ask(&r, "web.service.local.", RecordType::SRV, Transport::Tcp);
        assert!(!tcp.truncated());
        assert_eq!(tcp.answers().len(), 60);
    }

    #[test]
    fn answers_rotate() {
        let r = registry(3);
        let first = |rotate| {
            let bytes = respond(&zone(), &r, &query("web.service.local.", RecordType::A), Transport::Udp, rotate);
            Message::from_vec(&bytes.unwrap()).unwrap().answers()[0].clone()
        };
        assert_ne!(first(0), first(1));
    }

    #[test]
    fn malformed_packets_get_formerr_or_silence() {
        let r = registry(1);
        assert_eq!(respond(&zone(), &r, &[1, 2, 3], Transport::Udp, 0), None);
        let mut truncated = query("web.service.local.", RecordType::A);
        truncated.truncate(20);
        let m = Message::from_vec(&respond(&zone(), &r, &truncated, Transport::Udp, 0).unwrap()).unwrap();
        assert_eq!((m.id(), m.response_code()), (4242, ResponseCode::FormErr));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Arbitrary bytes never panic the decoder, and whatever is sent back decodes.
        #[test]
        fn arbitrary_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..600)) {
            let r = registry(3);
            for transport in [Transport::Udp, Transport::Tcp] {
                if let Some(bytes) = respond(&zone(), &r, &packet, transport, 0) {
                    prop_assert!(Message::from_vec(&bytes).is_ok());
                }
            }
        }

        /// Valid queries with random bits flipped never panic either.
        #[test]
        fn mutated_queries_never_panic(flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..8)) {
            let r = registry(3);
            let mut packet = query("_web._tcp.service.local.", RecordType::SRV);
            for (at, bits) in flips {
                let at = at % packet.len();
                packet[at] ^= bits;
            }
            let _ = respond(&zone(), &r, &packet, Transport::Udp, 0);
        }
    }
}
