//! The audit's code scans: the red-zone rule ([`Scan`]) and the frame-pointer rule
//! ([`check_frames`]), over the add-on's executable bytes with `iced-x86`, and the function
//! starts and lengths of `.eh_frame_hdr` ([`unwind_functions`]) that find the functions of a
//! stripped add-on.

use std::collections::BTreeMap;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Formatter, Instruction, InstructionInfoFactory,
    IntelFormatter, OpAccess, OpKind, Register,
};
use object::elf;

use crate::audit::{violation, Frames, Symbol, Violation, FRAME_POINTER, RED_ZONE};
use crate::elf::FileSpace;

/// The red-zone scan: a linear sweep that also follows the frame pointer.
///
/// An access below the stack pointer shows as `[rsp - n]`, or, in a function that set up a
/// frame with `mov rbp, rsp`, as `[rbp - n]` beyond what the function has since pushed or
/// subtracted from rsp (the frame is tracked only while every change of rsp is a known
/// push, pop or constant add/sub, and is dropped at a loop that may repeat such a change,
/// as stack probes do, so the rbp check never underestimates the frame).
pub struct Scan<'f> {
    functions: &'f [Symbol],
    factory: InstructionInfoFactory,
    formatter: IntelFormatter,
    pub instructions: u64,
}

/// rbp == rsp + `delta`, known since the `mov rbp, rsp` or the last change of rsp at `since`.
#[derive(Debug, Clone, Copy)]
struct Frame {
    delta: i64,
    since: u64,
}

impl<'f> Scan<'f> {
    pub fn new(functions: &'f [Symbol]) -> Self {
        Self {
            functions,
            factory: InstructionInfoFactory::new(),
            formatter: IntelFormatter::new(),
            instructions: 0,
        }
    }

    fn function_at(&self, addr: u64) -> Option<&'f Symbol> {
        let i = self.functions.partition_point(|s| s.value <= addr);
        self.functions[..i]
            .iter()
            .rev()
            .find(|s| s.value <= addr && addr < s.value + s.size.max(1))
    }

    fn starts_function(&self, addr: u64) -> bool {
        let i = self.functions.partition_point(|s| s.value < addr);
        self.functions.get(i).is_some_and(|s| s.value == addr)
    }

    pub fn range(&mut self, vaddr: u64, bytes: &[u8], out: &mut Vec<Violation>) {
        let mut decoder = Decoder::with_ip(64, bytes, vaddr, DecoderOptions::NONE);
        let mut instr = Instruction::default();
        let mut frame: Option<Frame> = None;
        while decoder.can_decode() {
            decoder.decode_out(&mut instr);
            self.instructions += 1;
            if instr.is_invalid() {
                frame = None;
                continue;
            }
            if self.starts_function(instr.ip()) {
                frame = None;
            }
            self.check(&instr, frame, out);
            frame = self.next_frame(&instr, frame);
        }
    }

    fn check(&mut self, instr: &Instruction, frame: Option<Frame>, out: &mut Vec<Violation>) {
        let frame = frame.map(|f| f.delta);
        for op in 0..instr.op_count() {
            if instr.op_kind(op) != OpKind::Memory {
                continue;
            }
            // With an index register the displacement alone says nothing (`buf[i - 1]` is
            // `[rsp + i - 1]`); a function that really uses the red zone also has plain
            // `[rsp - n]` accesses (its stores and spills).
            if instr.memory_index() != Register::None {
                continue;
            }
            let base = instr.memory_base();
            let disp = match base {
                Register::RSP | Register::RBP => instr.memory_displacement64() as i64,
                Register::ESP | Register::EBP => i64::from(instr.memory_displacement32() as i32),
                _ => continue,
            };
            let below = match base {
                Register::RSP | Register::ESP => -disp,
                _ => match frame {
                    Some(d) => -d - disp,
                    None => continue,
                },
            };
            if below <= 0 {
                continue;
            }
            let access = match self.factory.info(instr).op_access(op) {
                OpAccess::Read | OpAccess::CondRead => "reads",
                OpAccess::Write | OpAccess::CondWrite => "writes",
                OpAccess::ReadWrite | OpAccess::ReadCondWrite => "reads and writes",
                _ => continue, // lea, nop, prefetch: no access
            };
            let mut text = String::new();
            self.formatter.format(instr, &mut text);
            let place = match self.function_at(instr.ip()) {
                Some(f) => format!(" in `{}`", f.name),
                None => String::new(),
            };
            let via = match (base, frame) {
                (Register::RBP | Register::EBP, Some(d)) => {
                    format!(" (rbp is rsp+{d} here)")
                }
                _ => String::new(),
            };
            out.push(violation(
                RED_ZONE,
                format!(
                    "{:#x}{place}: `{text}` {access} {below} bytes below rsp{via}; an interrupt \
                     on the same kernel stack would clobber it (build with -C no-redzone=yes / \
                     -mno-red-zone, including the precompiled core/alloc)",
                    instr.ip()
                ),
            ));
        }
    }

    fn next_frame(&mut self, instr: &Instruction, frame: Option<Frame>) -> Option<Frame> {
        let ip = instr.ip();
        let at = |delta| Some(Frame { delta, since: ip });
        let reg_to_reg = instr.op_count() == 2
            && instr.op0_kind() == OpKind::Register
            && instr.op1_kind() == OpKind::Register;
        if reg_to_reg && matches!(instr.code(), Code::Mov_r64_rm64 | Code::Mov_rm64_r64) {
            match (instr.op0_register(), instr.op1_register()) {
                (Register::RBP, Register::RSP) | (Register::RSP, Register::RBP) => return at(0),
                _ => {}
            }
        }
        let frame = frame?;
        let d = frame.delta;
        if matches!(
            instr.flow_control(),
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
        ) && instr.near_branch_target() <= frame.since
        {
            return None; // a loop that may move rsp again
        }
        if matches!(
            instr.flow_control(),
            FlowControl::Interrupt | FlowControl::Exception | FlowControl::Return
        ) {
            return None;
        }
        if matches!(
            instr.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall
        ) {
            return Some(frame); // the callee returns with rsp where it was
        }
        if instr.op0_kind() == OpKind::Register && instr.op0_register() == Register::RSP {
            let imm = || instr.immediate(1) as i64;
            match instr.code() {
                Code::Sub_rm64_imm8 | Code::Sub_rm64_imm32 => return at(d + imm()),
                Code::Add_rm64_imm8 | Code::Add_rm64_imm32 => return at(d - imm()),
                _ => {}
            }
        }
        let increment = i64::from(instr.stack_pointer_increment());
        let info = self.factory.info(instr);
        let written = |r: Register| writes_register(info, r);
        if written(Register::RBP) {
            return None;
        }
        if increment != 0 {
            return at(d - increment);
        }
        if written(Register::RSP) {
            return None;
        }
        Some(frame)
    }
}

/// The functions PT_GNU_EH_FRAME knows: one per entry of `.eh_frame_hdr`'s search table
/// (one per FDE; rustc and gcc give every function unwind information), its start and,
/// when its FDE and CIE can be read, its length. This is what finds the functions of a
/// stripped add-on, whose only symbols are its exports. `None` without a readable table.
pub fn unwind_functions(image: &FileSpace<'_>) -> Option<Vec<(u64, Option<u64>)>> {
    let seg = image
        .segments
        .iter()
        .find(|s| s.p_type == elf::PT_GNU_EH_FRAME)?;
    let hdr = image.file_bytes(seg.vaddr, seg.filesz)?;
    let [1, ptr_enc, count_enc, table_enc, ..] = *hdr else {
        return None;
    };
    let mut at = 4;
    read_encoded(hdr, &mut at, ptr_enc, seg.vaddr)?; // eh_frame_ptr: not needed
    let count = read_encoded(hdr, &mut at, count_enc, seg.vaddr)?;
    let mut functions = Vec::new();
    for _ in 0..count {
        let start = read_encoded(hdr, &mut at, table_enc, seg.vaddr)?;
        let fde = read_encoded(hdr, &mut at, table_enc, seg.vaddr)?;
        functions.push((start, fde_length(image, fde)));
    }
    Some(functions)
}

/// The `pc_range` of the FDE at `fde`, in the pointer format its CIE's 'R' augmentation
/// gives.
fn fde_length(image: &FileSpace<'_>, fde: u64) -> Option<u64> {
    let head = image.file_bytes(fde, 8)?;
    let length = u64::from(u32::from_le_bytes(head[0..4].try_into().ok()?));
    // 0xffffffff would be 64-bit DWARF, which no x86-64 toolchain emits here.
    let cie_offset = u64::from(u32::from_le_bytes(head[4..8].try_into().ok()?));
    if !(8..0xffff_fff0).contains(&length) || cie_offset == 0 {
        return None;
    }
    // The CIE pointer counts back from its own field.
    let enc = cie_pointer_encoding(image, fde.checked_add(4)?.checked_sub(cie_offset)?)?;
    let body_at = fde.checked_add(8)?;
    let body = image.file_bytes(body_at, length - 4)?;
    let mut at = 0;
    // pc_begin, then pc_range in the same format without the pc-relative part.
    read_encoded(body, &mut at, enc, body_at)?;
    read_encoded(body, &mut at, enc & 0x0f, 0)
}

/// The encoding of the FDE pointers of the CIE at `cie` ('R' of a "z" augmentation).
fn cie_pointer_encoding(image: &FileSpace<'_>, cie: u64) -> Option<u8> {
    let length = u64::from(u32::from_le_bytes(
        image.file_bytes(cie, 4)?.try_into().ok()?,
    ));
    let body = image.file_bytes(cie.checked_add(4)?, length)?;
    let (id, version) = (body.get(0..4)?, *body.get(4)?);
    if id != [0; 4] {
        return None;
    }
    let mut at = 5;
    let aug_len = body.get(at..)?.iter().position(|&b| b == 0)?;
    let aug = &body[at..at + aug_len];
    at += aug_len + 1;
    let Some(rest) = aug.strip_prefix(b"z") else {
        return aug.is_empty().then_some(0); // no augmentation: absolute pointers
    };
    let leb = |at: &mut usize| -> Option<()> {
        while *body.get(*at)? & 0x80 != 0 {
            *at += 1;
        }
        *at += 1;
        Some(())
    };
    leb(&mut at)?; // code alignment
    leb(&mut at)?; // data alignment
    if version == 1 {
        at += 1; // return address register
    } else {
        leb(&mut at)?;
    }
    leb(&mut at)?; // augmentation data length
    for &c in rest {
        match c {
            b'R' => return body.get(at).copied(),
            b'L' => at += 1,
            b'P' => {
                let enc = *body.get(at)?;
                at += 1;
                read_encoded(body, &mut at, enc & 0x0f, 0)?; // the personality routine
            }
            b'S' | b'B' => {}
            _ => return None,
        }
    }
    Some(0)
}

/// A `DW_EH_PE_*`-encoded value at `data[*at]`; `base` is the address of `data`:
/// pc-relative values count from the field itself, data-relative ones (only in
/// `.eh_frame_hdr`) from `base`.
fn read_encoded(data: &[u8], at: &mut usize, enc: u8, base: u64) -> Option<u64> {
    let size = match enc & 0x0f {
        0x00 | 0x04 | 0x0c => 8,
        0x02 | 0x0a => 2,
        0x03 | 0x0b => 4,
        _ => return None, // DW_EH_PE_omit, the LEB128 forms: never in these tables
    };
    let b = data.get(*at..*at + size)?;
    let mut raw = [0u8; 8];
    raw[..size].copy_from_slice(b);
    let mut value = u64::from_le_bytes(raw);
    if enc & 0x08 != 0 {
        let shift = 64 - 8 * size as u32;
        value = (((value << shift) as i64) >> shift) as u64; // sign-extend sdata2/4
    }
    let value = match enc & 0xf0 {
        0x00 => value,
        0x10 => base.wrapping_add(*at as u64).wrapping_add(value),
        0x30 => base.wrapping_add(value),
        _ => return None,
    };
    *at += size;
    Some(value)
}

/// The frame-pointer rule: a backtrace can walk through every function of the add-on.
///
/// Haiku's kernel debugger (and a panic's backtrace) walks the stack through rbp: `[rbp]`
/// is the caller's rbp and `[rbp+8]` the return address. Haiku builds its x86_64 kernel
/// code with `-fno-omit-frame-pointer` for this. The criterion is what that flag guarantees
/// for gcc's own output, checked per function (from its symbol or FDE start to the end its
/// symbol or FDE gives, or to the next start):
///
/// - **rbp is never a general register.** The only writes of rbp allowed are the frame
///   setup (`mov rbp, rsp` right after `push rbp`, no rsp change in between, or `enter`)
///   and its restore (`pop rbp` after a `push rbp`, `leave`). Anything else leaves a value
///   in rbp that a backtrace taken below it (in a callee, or by an interrupt) follows as a
///   frame chain: the walk breaks, and the debugger reads wherever it points.
/// - **Every call is made with the frame set up**: the first `call` in address order comes
///   after `push rbp; mov rbp, rsp`. A function that calls without a frame leaves its
///   caller's rbp in place, so every backtrace through the call skips a frame. Address
///   order is how gcc and LLVM lay out a prologue: at the entry or, shrink-wrapped, after
///   an early exit that makes no call (part of the add-on is built like that).
/// - **Leaves may be frameless.** A function that makes no call and never writes rbp
///   keeps the chain intact; only an interrupt landing inside it sees it, shown from the
///   interrupt frame, its caller then missing from that one trace. gcc 12 with
///   `-fno-omit-frame-pointer -O2` emits such leaves (a leaf that needs no stack, a tail
///   call), so kernel code built the way Haiku builds it has them. So does the
///   precompiled `core`/`alloc` of the stable toolchain, built with frame pointers only in
///   functions that call (every function of it that calls sets up rbp, none of its leaves
///   does), which cannot be rebuilt without rust-src and build-std. The add-on's own code
///   (`-C force-frame-pointers=yes`) sets up rbp in leaves too; `cargo xtask build-haiku`
///   checks by name that every frameless leaf is precompiled, which a stripped file
///   cannot tell, so here they are listed in the report rather than refused.
///
/// Without the flag, LLVM keeps other values in rbp, or calls without a frame, in nearly
/// every function of the add-on that calls: the rule refuses it and names each one.
pub fn check_frames(
    ranges: &[(u64, &[u8])],
    symbols: &[Symbol],
    symbols_from: &str,
    unwind: Option<&[(u64, Option<u64>)]>,
    out: &mut Vec<Violation>,
) -> Frames {
    // Each start with its first name (`symbols` is sorted by address, then name) and the
    // lengths its symbol and its FDE give.
    let mut starts: BTreeMap<u64, (Option<&Symbol>, Option<u64>)> = BTreeMap::new();
    for s in symbols {
        let e = starts.entry(s.value).or_default();
        if e.0.is_none() {
            e.0 = Some(s);
        }
    }
    for &(a, len) in unwind.unwrap_or_default() {
        let e = starts.entry(a).or_default();
        e.1 = e.1.or(len);
    }
    let mut from = Vec::new();
    if !symbols.is_empty() {
        from.push(symbols_from);
    }
    if unwind.is_some() {
        from.push("PT_GNU_EH_FRAME");
    }
    let mut frames = Frames {
        from: if from.is_empty() {
            "nowhere: no function symbols, no PT_GNU_EH_FRAME".into()
        } else {
            from.join(" and ")
        },
        ..Frames::default()
    };
    let starts: Vec<_> = starts.into_iter().collect();
    let mut factory = InstructionInfoFactory::new();
    for (i, &(start, (sym, unwind_len))) in starts.iter().enumerate() {
        let Some(&(base, bytes)) = ranges
            .iter()
            .find(|(v, b)| (*v..*v + b.len() as u64).contains(&start))
        else {
            continue; // not code (a symbol in a data section, a stale FDE)
        };
        let mut end = base + bytes.len() as u64;
        if let Some(&(next, _)) = starts.get(i + 1) {
            end = end.min(next);
        }
        // Without section headers the executable segment holds data too (.rodata,
        // .eh_frame): a length keeps the last function out of it.
        for len in [sym.map(|s| s.size), unwind_len].into_iter().flatten() {
            if len > 0 {
                end = end.min(start.saturating_add(len));
            }
        }
        let code = &bytes[(start - base) as usize..(end - base) as usize];
        frames.functions += 1;
        let name = sym.map_or(String::new(), |s| {
            format!("{:#}", rustc_demangle::demangle(&s.name))
        });
        let who = if name.is_empty() {
            format!("the function at {start:#x} (no symbol)")
        } else {
            format!("`{name}` ({start:#x})")
        };
        const FIX: &str = "build with -C force-frame-pointers=yes / -fno-omit-frame-pointer";
        let message = match frame_use(start, code, &mut factory) {
            FrameUse::Frame => {
                frames.framed += 1;
                continue;
            }
            FrameUse::Leaf => {
                frames.leaves.push((start, name));
                continue;
            }
            FrameUse::CallsWithoutFrame { at, text } => format!(
                "{who} calls without a frame pointer: `{text}` at {at:#x} comes before any \
                 `push rbp; mov rbp, rsp`, so every backtrace taken below that call (a panic, \
                 a fault, Haiku's kernel debugger) skips a frame; {FIX}"
            ),
            FrameUse::Clobbers { at, text, why } => format!(
                "{who} uses rbp as a general register: `{text}` at {at:#x} {why}, so a \
                 backtrace taken below it follows a broken frame chain; {FIX}"
            ),
        };
        frames.broken += 1;
        out.push(violation(FRAME_POINTER, message));
    }
    frames
}

/// How one function treats rbp ([`check_frames`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum FrameUse {
    /// Sets up rbp as its frame pointer before any call; otherwise only restores it.
    Frame,
    /// No frame, no call, rbp never written.
    Leaf,
    /// The first call, made before any frame setup.
    CallsWithoutFrame { at: u64, text: String },
    /// The first write of rbp that is neither the frame setup nor its restore.
    Clobbers {
        at: u64,
        text: String,
        why: &'static str,
    },
}

fn frame_use(start: u64, code: &[u8], factory: &mut InstructionInfoFactory) -> FrameUse {
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut formatter = IntelFormatter::new();
    // Call targets read like the addresses around them in the message.
    let o = formatter.options_mut();
    o.set_hex_prefix("0x");
    o.set_hex_suffix("");
    o.set_uppercase_hex(false);
    o.set_branch_leading_zeros(false);
    let mut text = |instr: &Instruction| {
        let mut s = String::new();
        formatter.format(instr, &mut s);
        s
    };
    // `saved`: rbp was pushed; `pushed`: ... and rsp has not moved since, so `mov rbp, rsp`
    // makes [rbp] the saved rbp; `framed`: the frame is set up.
    let (mut saved, mut pushed, mut framed) = (false, false, false);
    let mut first_call = None;
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        if instr.is_invalid() {
            pushed = false;
            continue;
        }
        let op0 = (instr.op_count() > 0 && instr.op0_kind() == OpKind::Register)
            .then(|| instr.op0_register());
        let reg_to_reg = instr.op_count() == 2
            && instr.op0_kind() == OpKind::Register
            && instr.op1_kind() == OpKind::Register;
        match instr.code() {
            Code::Push_r64 if op0 == Some(Register::RBP) => {
                (saved, pushed) = (true, true);
                continue;
            }
            Code::Mov_r64_rm64 | Code::Mov_rm64_r64
                if reg_to_reg
                    && instr.op0_register() == Register::RBP
                    && instr.op1_register() == Register::RSP =>
            {
                if !pushed {
                    return FrameUse::Clobbers {
                        at: instr.ip(),
                        text: text(&instr),
                        why: "points rbp at the stack where the caller's rbp was not just \
                              pushed",
                    };
                }
                (framed, pushed) = (true, false);
                continue;
            }
            Code::Enterq_imm16_imm8 => {
                (saved, framed, pushed) = (true, true, false);
                continue;
            }
            Code::Pop_r64 if op0 == Some(Register::RBP) && saved => {
                pushed = false;
                continue;
            }
            Code::Leaveq if framed => {
                pushed = false;
                continue;
            }
            _ => {}
        }
        if !framed
            && first_call.is_none()
            && matches!(
                instr.flow_control(),
                FlowControl::Call | FlowControl::IndirectCall
            )
        {
            first_call = Some((instr.ip(), text(&instr)));
        }
        let info = factory.info(&instr);
        let writes = |r: Register| writes_register(info, r);
        if writes(Register::RBP) {
            return FrameUse::Clobbers {
                at: instr.ip(),
                text: text(&instr),
                why: "writes rbp",
            };
        }
        if instr.stack_pointer_increment() != 0 || writes(Register::RSP) {
            pushed = false;
        }
    }
    match first_call {
        Some((at, text)) => FrameUse::CallsWithoutFrame { at, text },
        None if framed => FrameUse::Frame,
        None => FrameUse::Leaf,
    }
}

/// Whether the instruction `info` describes may write (all of) register `r`.
fn writes_register(info: &iced_x86::InstructionInfo, r: Register) -> bool {
    info.used_registers().iter().any(|u| {
        u.register().full_register() == r
            && matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_use_follows_the_prologue() {
        let use_of = |code: &[u8]| frame_use(0x1000, code, &mut InstructionInfoFactory::new());
        let (push, mov, call, pop, ret) = (
            &[0x55][..],             // push rbp
            &[0x48, 0x89, 0xe5][..], // mov rbp, rsp
            &[0xe8, 0, 0, 0, 0][..], // call (the next instruction)
            &[0x5d][..],             // pop rbp
            &[0xc3][..],             // ret
        );
        assert_eq!(
            use_of(&[push, mov, call, pop, ret].concat()),
            FrameUse::Frame
        );
        // gcc schedules other instructions between the push and the mov.
        let xor = &[0x31, 0xc0][..]; // xor eax, eax
        assert_eq!(
            use_of(&[push, xor, mov, call, pop, ret].concat()),
            FrameUse::Frame
        );
        // Shrink-wrapped: an early exit before the prologue.
        let early = [
            &[0x48, 0x85, 0xff, 0x74, 0x0b][..], // test rdi, rdi; je +11 (to the xor)
            push,
            mov,
            call,
            pop,
            ret,
            xor,
            ret,
        ];
        assert_eq!(use_of(&early.concat()), FrameUse::Frame);
        // enter / leave.
        let enter = &[0xc8, 0x10, 0x00, 0x00][..]; // enter 16, 0
        assert_eq!(
            use_of(&[enter, call, &[0xc9], ret].concat()),
            FrameUse::Frame
        );
        // Leaves: no call, rbp untouched, a tail call included.
        let lea = &[0x8d, 0x44, 0x7f, 0x01][..]; // lea eax, [rdi+rdi*2+1]
        assert_eq!(use_of(&[lea, ret].concat()), FrameUse::Leaf);
        assert_eq!(use_of(&[0xe9, 0, 0, 0, 0]), FrameUse::Leaf); // jmp
                                                                 // A call with only rsp moved.
        let sub = &[0x48, 0x83, 0xec, 0x08][..]; // sub rsp, 8
        assert_eq!(
            use_of(&[sub, call, ret].concat()),
            FrameUse::CallsWithoutFrame {
                at: 0x1004,
                text: "call 0x1009".into()
            }
        );
        // A call before the prologue.
        assert!(matches!(
            use_of(&[call, push, mov, call, pop, ret].concat()),
            FrameUse::CallsWithoutFrame { at: 0x1000, .. }
        ));
        // rbp written: a callee-saved value, zeroed, popped without a push, or pointed at
        // the stack after another push.
        let clobber = |code: &[u8]| match use_of(code) {
            FrameUse::Clobbers { at, text, .. } => (at, text),
            other => panic!("{other:?}"),
        };
        let mov_rdi = &[0x48, 0x89, 0xfd][..]; // mov rbp, rdi
        assert_eq!(
            clobber(&[push, mov_rdi, call, pop, ret].concat()),
            (0x1001, "mov rbp,rdi".into())
        );
        assert_eq!(clobber(&[0x31, 0xed, 0xc3]), (0x1000, "xor ebp,ebp".into()));
        assert_eq!(clobber(&[pop, ret].concat()), (0x1000, "pop rbp".into()));
        let push_rbx = &[0x53][..];
        assert_eq!(
            clobber(&[push, push_rbx, mov, call].concat()),
            (0x1002, "mov rbp,rsp".into())
        );
        // After the frame, the epilogue's pop and a later path's call are fine.
        let late_call = [push, mov, pop, ret, call, ret];
        assert_eq!(use_of(&late_call.concat()), FrameUse::Frame);
    }

    /// Bytes from the precompiled `core` of the stable toolchain (a leaf
    /// `Iterator::last`), which keeps two XMM values in the red zone.
    #[test]
    fn scan_finds_red_zone_use_in_raw_code() {
        let code = [
            0x0f, 0x10, 0x07, // movups xmm0, [rdi]
            0x0f, 0x29, 0x44, 0x24, 0xd8, // movaps [rsp-0x28], xmm0
            0x48, 0x8b, 0x4c, 0x24, 0xe0, // mov rcx, [rsp-0x20]
            0x8b, 0x44, 0x8c, 0xe4, // mov eax, [rsp+rcx*4-0x1c] (indexed: not judged)
            0x48, 0x8d, 0x44, 0x24, 0xf0, // lea rax, [rsp-0x10] (no access)
            0x0f, 0x18, 0x4c, 0x24, 0xf0, // prefetcht0 [rsp-0x10] (no access)
            0xc3, // ret
        ];
        let mut out = Vec::new();
        let mut scan = Scan::new(&[]);
        scan.range(0x1000, &code, &mut out);
        let text: Vec<String> = out.iter().map(|v| v.message.clone()).collect();
        assert_eq!(out.len(), 2, "{text:#?}");
        assert!(text[0].starts_with("0x1003: `movaps [rsp-28h],xmm0` writes 40 bytes"));
        assert!(text[1].starts_with("0x1008: `mov rcx,[rsp-20h]` reads 32 bytes"));
    }

    #[test]
    fn scan_follows_the_frame_pointer() {
        let frame = |body: &[u8]| {
            let mut code = vec![0x55, 0x48, 0x89, 0xe5]; // push rbp; mov rbp, rsp
            code.extend_from_slice(body);
            code.extend_from_slice(&[0x5d, 0x8b, 0x45, 0xfc, 0xc3]); // pop rbp; mov eax, [rbp-4]; ret
            let mut out = Vec::new();
            Scan::new(&[]).range(0, &code, &mut out);
            out.into_iter().map(|v| v.message).collect::<Vec<_>>()
        };
        let store = [0x89, 0x7d, 0xfc]; // mov [rbp-4], edi
        let v = frame(&store);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(
            v[0].contains("4 bytes below rsp (rbp is rsp+0 here)"),
            "{v:#?}"
        );
        // sub rsp, 16 first: the store is inside the frame.
        assert_eq!(
            frame(&[&[0x48, 0x83, 0xec, 0x10][..], &store].concat()),
            [] as [String; 0]
        );
        // push rbx: rbp = rsp + 8, so [rbp-4] is above rsp and [rbp-0x10] below it.
        assert_eq!(frame(&[&[0x53][..], &store].concat()), [] as [String; 0]);
        let v = frame(&[0x53, 0x89, 0x7d, 0xf0]);
        assert!(
            v[0].contains("8 bytes below rsp (rbp is rsp+8 here)"),
            "{v:#?}"
        );
        // A call in between changes nothing; an unknown change of rsp stops the tracking.
        let v = frame(&[&[0xe8, 0, 0, 0, 0][..], &store].concat());
        assert_eq!(v.len(), 1, "{v:#?}");
        // A stack-probe loop subtracts 0x1000 as often as it runs: the frame is unknown.
        let probe = [
            0x49, 0x89, 0xe3, // mov r11, rsp
            0x49, 0x81, 0xeb, 0x00, 0x30, 0x00, 0x00, // sub r11, 0x3000
            0x48, 0x81, 0xec, 0x00, 0x10, 0x00, 0x00, // 1: sub rsp, 0x1000
            0x48, 0xc7, 0x04, 0x24, 0x00, 0x00, 0x00, 0x00, // mov qword [rsp], 0
            0x4c, 0x39, 0xdc, // cmp rsp, r11
            0x75, 0xec, // jne 1b
            0x89, 0x85, 0x00, 0xe0, 0xff, 0xff, // mov [rbp-0x2000], eax
        ];
        assert_eq!(frame(&probe), [] as [String; 0]);
        // A loop that does not move rsp keeps the frame.
        let v = frame(&[&store[..], &[0x75, 0xfb]].concat()); // 1: mov [rbp-4], edi; jne 1b
        assert_eq!(v.len(), 1, "{v:#?}");
        let and_rsp = [0x48, 0x83, 0xe4, 0xf0]; // and rsp, -16
        assert_eq!(frame(&[&and_rsp[..], &store].concat()), [] as [String; 0]);
    }
}
