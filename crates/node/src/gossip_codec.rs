//! Gossip a member can only speak for itself: the codec between `foca` and
//! the wire that binds every SWIM packet to the peer that sent it.
//!
//! A SWIM packet names its sender in its header and piggybacks what it has
//! heard of other members. Nothing in it is signed, so, read as it is, any
//! member could speak for any other: claim another box is draining (its
//! shards would be moved off it), give it an address of its choosing (it
//! would stop answering there and be declared down), or invent members.
//!
//! [`BoundCodec`] decodes a packet knowing which authenticated peer handed
//! it over ([`Heard::set_sender`]):
//! - the header's sender must be that peer, or the packet is refused;
//! - the sender's own identity (address, advert, bump) is taken as it says,
//!   and kept as **heard from itself** ([`Heard::own_word`]);
//! - an update about another member keeps its liveness (alive, suspect,
//!   down, and the incarnation SWIM refutes with) but never its identity:
//!   the identity becomes the one that member last gave itself, or, for a
//!   member not yet heard from directly, a placeholder with bump 0 that any
//!   word of its own replaces;
//! - an update about this node itself is left as it is: SWIM compares it
//!   with the node's own identity and refutes a suspicion of it.
//!
//! What the node shows of a member (address, advert, draining) is only its
//! own word; whether it is down is decided by this node's own probe (see
//! `net::gossip`), so a claim about another member leads to a probe, never
//! by itself to a drain or a repair.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member, PostcardCodec};

use cairn_host::lock;
use cairn_proto::gossip::GossipMember;
use cairn_proto::ids::NodeId;

/// Most members whose own word is kept: a member can add only itself, so
/// this bounds a swarm, not an attacker.
pub const MAX_HEARD: usize = 4096;

/// Why a packet is refused.
#[derive(Debug, thiserror::Error)]
pub enum GossipCodecError {
    /// It does not decode.
    #[error("gossip packet does not decode: {0}")]
    Decode(#[from] postcard::Error),
    /// Its header names a sender other than the peer that sent it.
    #[error("a gossip packet from {peer} claims to come from {claimed}; refused")]
    NotFromSender {
        /// The authenticated peer.
        peer: String,
        /// Who the header named.
        claimed: String,
    },
    /// No sender was set: a packet must come through an authenticated peer.
    #[error("a gossip packet arrived with no authenticated sender")]
    NoSender,
}

/// What this node has heard members say of themselves, and who is speaking now.
#[derive(Debug)]
pub struct Heard {
    me: NodeId,
    sender: Option<NodeId>,
    own: BTreeMap<NodeId, GossipMember>,
}

impl Heard {
    /// Shared and empty, for the node `me`.
    pub fn shared(me: NodeId) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            me,
            sender: None,
            own: BTreeMap::new(),
        }))
    }

    /// The authenticated peer whose packet is decoded next (`None` after).
    pub fn set_sender(&mut self, sender: Option<NodeId>) {
        self.sender = sender;
    }

    /// What `node` last said of itself, if it ever spoke to this node.
    pub fn own_word(&self, node: &NodeId) -> Option<&GossipMember> {
        self.own.get(node)
    }

    /// Keeps `member`'s word about itself unless an older one arrives late.
    fn keep(&mut self, member: &GossipMember) {
        match self.own.get(&member.node) {
            Some(known) if known.bump > member.bump => {}
            Some(_) => {
                self.own.insert(member.node, member.clone());
            }
            None if self.own.len() < MAX_HEARD => {
                self.own.insert(member.node, member.clone());
            }
            None => {}
        }
    }

    /// The identity an update about `member` (told by someone else) stands for.
    fn told_of(&self, member: &GossipMember) -> GossipMember {
        match self.own.get(&member.node) {
            Some(own) => own.clone(),
            None => GossipMember::placeholder(member.node, member.addr.clone(), None),
        }
    }
}

/// `foca`'s postcard codec, bound to the sender (see the module's doc).
pub struct BoundCodec {
    heard: Arc<Mutex<Heard>>,
}

impl BoundCodec {
    /// A codec that reads and records into `heard`.
    pub fn new(heard: Arc<Mutex<Heard>>) -> Self {
        Self { heard }
    }
}

impl Codec<GossipMember> for BoundCodec {
    type Error = GossipCodecError;

    fn encode_header(
        &mut self,
        header: &Header<GossipMember>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        Ok(PostcardCodec.encode_header(header, buf)?)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<GossipMember>, Self::Error> {
        let header: Header<GossipMember> = PostcardCodec.decode_header(buf)?;
        let mut heard = lock(&self.heard);
        let sender = heard.sender.ok_or(GossipCodecError::NoSender)?;
        if header.src.node != sender {
            return Err(GossipCodecError::NotFromSender {
                peer: sender.to_human(),
                claimed: header.src.node.to_human(),
            });
        }
        heard.keep(&header.src);
        Ok(header)
    }

    fn encode_member(
        &mut self,
        member: &Member<GossipMember>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        Ok(PostcardCodec.encode_member(member, buf)?)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<GossipMember>, Self::Error> {
        let member: Member<GossipMember> = PostcardCodec.decode_member(buf)?;
        let heard = lock(&self.heard);
        if heard.sender == Some(member.id().node) || member.id().node == heard.me {
            // Its own word about itself (the header already carried it), or
            // news of this node, which SWIM checks against its own identity.
            return Ok(member);
        }
        Ok(Member::new(
            heard.told_of(member.id()),
            member.incarnation(),
            member.state(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    use cairn_proto::gossip::Advert;
    use foca::{AccumulatingRuntime, Foca, Message, NoCustomBroadcast, State};
    use rand::SeedableRng;

    fn member(n: u8, bump: u32, draining: bool) -> GossipMember {
        GossipMember {
            node: NodeId([n; 32]),
            addr: format!("10.0.0.{n}:7000"),
            bump,
            advert: Advert {
                site: None,
                capacity: 100,
                free: 50,
                software: "t".into(),
                draining,
                reach: Default::default(),
            },
        }
    }

    fn packet(src: &GossipMember, dst: &GossipMember, updates: &[Member<GossipMember>]) -> Vec<u8> {
        let mut buf = Vec::new();
        let header = Header {
            src: src.clone(),
            src_incarnation: 0,
            dst: dst.clone(),
            message: Message::Ping(1),
        };
        PostcardCodec.encode_header(&header, &mut buf).unwrap();
        buf.put_u16(updates.len() as u16);
        for update in updates {
            PostcardCodec.encode_member(update, &mut buf).unwrap();
        }
        buf
    }

    type Swim = Foca<GossipMember, BoundCodec, rand::rngs::StdRng, NoCustomBroadcast>;

    fn swim(me: &GossipMember, heard: &Arc<Mutex<Heard>>) -> Swim {
        Foca::new(
            me.clone(),
            foca::Config::new_lan(NonZeroU32::new(32).unwrap()),
            rand::rngs::StdRng::seed_from_u64(7),
            BoundCodec::new(Arc::clone(heard)),
        )
    }

    /// Mallory (3) tells this node (1) that Bob (2) is draining, with an
    /// identity whose bump beats any Bob could pick, and at an address of
    /// her choosing; then sends a packet in Bob's name.
    #[test]
    fn a_member_cannot_speak_for_another() {
        let (me, bob, mallory) = (
            member(1, 5, false),
            member(2, 5, false),
            member(3, 5, false),
        );
        let heard = Heard::shared(me.node);
        let mut foca = swim(&me, &heard);
        let mut runtime = AccumulatingRuntime::new();
        // Bob speaks for himself first.
        lock(&heard).set_sender(Some(bob.node));
        foca.handle_data(&packet(&bob, &me, &[]), &mut runtime)
            .unwrap();
        // Mallory's forgery rides in her own packet.
        let forged = GossipMember {
            addr: "203.0.113.9:1".into(),
            bump: u32::MAX,
            ..member(2, 0, true)
        };
        lock(&heard).set_sender(Some(mallory.node));
        foca.handle_data(
            &packet(&mallory, &me, &[Member::new(forged, 9, State::Alive)]),
            &mut runtime,
        )
        .unwrap();
        let seen: Vec<GossipMember> = foca
            .iter_members()
            .filter(|m| m.id().node == bob.node)
            .map(|m| m.id().clone())
            .collect();
        assert_eq!(seen, vec![bob.clone()], "Bob is as Bob said he is");
        assert_eq!(lock(&heard).own_word(&bob.node), Some(&bob));
        // A packet in Bob's name from Mallory's connection is refused whole.
        let in_bobs_name = packet(&member(2, 99, true), &me, &[]);
        assert!(foca.handle_data(&in_bobs_name, &mut runtime).is_err());
        assert_eq!(lock(&heard).own_word(&bob.node), Some(&bob));
        // No sender, no packet.
        lock(&heard).set_sender(None);
        assert!(
            foca.handle_data(&packet(&mallory, &me, &[]), &mut runtime)
                .is_err()
        );
    }

    /// News of this node itself reaches SWIM as this node's own identity,
    /// so that SWIM can refute a suspicion (or, as here, learn that the
    /// swarm holds it down, and rejoin).
    #[test]
    fn news_of_this_node_is_left_for_swim_to_answer() {
        let (me, carol) = (member(1, 5, false), member(4, 7, false));
        let heard = Heard::shared(me.node);
        let mut foca = swim(&me, &heard);
        let mut runtime = AccumulatingRuntime::new();
        lock(&heard).set_sender(Some(carol.node));
        foca.handle_data(
            &packet(&carol, &me, &[Member::new(me.clone(), 0, State::Down)]),
            &mut runtime,
        )
        .unwrap();
        // Held down, SWIM rejoins under a renewed identity.
        assert_eq!(
            foca.identity().bump,
            me.bump + 1,
            "SWIM did not take the news as its own"
        );
    }

    /// A member heard of only through others gets a placeholder that its
    /// own first word replaces, and liveness still travels.
    #[test]
    fn liveness_travels_but_identity_comes_from_the_member() {
        let (me, carol, dave) = (
            member(1, 5, false),
            member(4, 7, false),
            member(5, 3, false),
        );
        let heard = Heard::shared(me.node);
        let mut foca = swim(&me, &heard);
        let mut runtime = AccumulatingRuntime::new();
        lock(&heard).set_sender(Some(carol.node));
        let told = Member::new(
            GossipMember {
                bump: 1_000_000,
                ..member(5, 0, true)
            },
            2,
            State::Suspect,
        );
        foca.handle_data(&packet(&carol, &me, &[told]), &mut runtime)
            .unwrap();
        let placeholder = foca
            .iter_members()
            .find(|m| m.id().node == dave.node)
            .unwrap()
            .clone();
        assert_eq!(placeholder.id().bump, 0);
        assert!(!placeholder.id().advert.draining);
        assert_eq!(placeholder.state(), State::Suspect);
        assert!(lock(&heard).own_word(&dave.node).is_none());
        // Dave speaks: his word wins over the placeholder.
        lock(&heard).set_sender(Some(dave.node));
        foca.handle_data(&packet(&dave, &me, &[]), &mut runtime)
            .unwrap();
        let now = foca
            .iter_members()
            .find(|m| m.id().node == dave.node)
            .unwrap()
            .id()
            .clone();
        assert_eq!(now, dave);
    }
}
