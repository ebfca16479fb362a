//! Reading the DNS messages the kernel programs capture: the question (name and type) of a
//! query, and the addresses a response gave for a name. Parsing is done by `simple-dns`, which
//! handles name compression and rejects malformed messages without panicking.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::{Packet, rdata::RData};

use crate::event::{DnsMessage, DnsQuestion};

/// Parses a message as sent over UDP (for TCP, strip the 2-byte length first). `None` for
/// anything that is not a well-formed DNS message with a question.
pub fn parse(bytes: &[u8]) -> Option<DnsMessage> {
    let packet = Packet::parse(bytes).ok()?;
    let q = packet.questions.first()?;
    let name = q
        .qname
        .to_string()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let qtype = match q.qtype {
        simple_dns::QTYPE::TYPE(t) => format!("{t:?}"),
        other => format!("{other:?}"),
    };
    let addresses = packet
        .answers
        .iter()
        .filter_map(|rr| match &rr.rdata {
            RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
            RData::AAAA(a) => Some(IpAddr::V6(Ipv6Addr::from(a.address))),
            _ => None,
        })
        .collect();
    Some(DnsMessage {
        question: DnsQuestion { name, qtype },
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{CLASS, Name, QCLASS, QTYPE, Question as Q, ResourceRecord, TYPE, rdata::A};

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(7);
        p.questions.push(Q::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(qtype),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn query_question() {
        let m = parse(&query("Example.COM", TYPE::AAAA)).unwrap();
        assert_eq!(
            m.question,
            DnsQuestion {
                name: "example.com".into(),
                qtype: "AAAA".into()
            }
        );
        assert!(m.addresses.is_empty());
    }

    #[test]
    fn response_addresses() {
        let mut p = Packet::new_reply(7);
        let name = Name::new_unchecked("exfil.example");
        p.questions.push(Q::new(
            name.clone(),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers.push(ResourceRecord::new(
            name,
            CLASS::IN,
            60,
            RData::A(A {
                address: 0x7f000005,
            }),
        ));
        let m = parse(&p.build_bytes_vec().unwrap()).unwrap();
        assert_eq!(m.question.name, "exfil.example");
        assert_eq!(m.addresses, vec![IpAddr::from([127, 0, 0, 5])]);
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0xff; 11]), None);
        let mut q = query("a.b", TYPE::A);
        q.truncate(q.len() - 3);
        assert_eq!(parse(&q), None);
    }
}
