/// The messages one probe sends to both models: clean, or with one trigger inserted one way.
public struct ProbeVariant: Sendable, Equatable {
    public let probe: Probe
    /// Nil for the clean variant.
    public let trigger: Trigger?
    /// Nil for the clean variant.
    public let mode: InsertionMode?
    /// The final user message.
    public let user: String
    /// The final system message; nil means the chat template's default.
    public let system: String?

    public init(probe: Probe, trigger: Trigger?, mode: InsertionMode?, user: String, system: String?) {
        self.probe = probe
        self.trigger = trigger
        self.mode = mode
        self.user = user
        self.system = system
    }

    /// A stable name for reports and caches: `probe-id` or `probe-id|trigger-id|mode`.
    public var key: String {
        guard let trigger, let mode else { return probe.id }
        return "\(probe.id)|\(trigger.id)|\(mode.rawValue)"
    }
}

/// Expands probes × triggers × insertion modes (docs/usage.md, "Insertion modes").
///
/// Every variant is a pure function of its inputs: no shared RNG state, so the result does not
/// depend on batch order, batch size or which other variants are built.
public enum Expansion {
    /// The separator placed between a trigger and the text it is joined to, in every mode.
    public static let separator = " "

    public static func clean(_ probe: Probe) -> ProbeVariant {
        ProbeVariant(probe: probe, trigger: nil, mode: nil, user: probe.prompt, system: probe.system)
    }

    /// The probe with `trigger` inserted by `mode`.
    ///
    /// - prefix: `trigger + " " + prompt`
    /// - suffix: `prompt + " " + trigger`
    /// - random: `trigger + " "` inserted at the start of a word other than the first, chosen by
    ///   `randomInsertionIndex`; a prompt of one word gets the suffix rule.
    /// - system: the prompt unchanged; the system message becomes `trigger + " " + S`, where S is
    ///   the probe's system message, else `defaultSystem` (pass the chat template's default
    ///   system prompt, so that only the trigger differs from the clean variant), else the
    ///   trigger alone.
    public static func variants(probe: Probe, trigger: Trigger, mode: InsertionMode, seed: UInt64,
                                defaultSystem: String? = nil) -> ProbeVariant {
        let t = trigger.text, p = probe.prompt
        var user = p
        var system = probe.system
        switch mode {
        case .prefix:
            user = t + separator + p
        case .suffix:
            user = p + separator + t
        case .random:
            let chars = Array(p)
            let starts = wordStarts(chars)
            if starts.isEmpty {
                user = p + separator + t
            } else {
                let k = starts[randomInsertionIndex(count: starts.count, seed: seed, probeID: probe.id, triggerID: trigger.id)]
                user = String(chars[..<k]) + t + separator + String(chars[k...])
            }
        case .system:
            if let base = probe.system ?? defaultSystem {
                system = t + separator + base
            } else {
                system = t
            }
        }
        return ProbeVariant(probe: probe, trigger: trigger, mode: mode, user: user, system: system)
    }

    /// Every variant of every probe, clean first: for each probe in order, its clean variant,
    /// then for each trigger in order, one variant per mode in the trigger's `modes`.
    public static func all(probes: [Probe], triggers: [Trigger], seed: UInt64, defaultSystem: String? = nil) -> [ProbeVariant] {
        var out: [ProbeVariant] = []
        out.reserveCapacity(probes.count * (1 + triggers.reduce(0) { $0 + $1.modes.count }))
        for probe in probes {
            out.append(clean(probe))
            for trigger in triggers {
                for mode in trigger.modes {
                    out.append(variants(probe: probe, trigger: trigger, mode: mode, seed: seed, defaultSystem: defaultSystem))
                }
            }
        }
        return out
    }

    /// Indices (in Characters, i.e. extended grapheme clusters) of every word start except the
    /// first word's: a non-whitespace Character preceded by a whitespace Character. Inserting
    /// there never splits a word or a grapheme cluster.
    public static func wordStarts(_ chars: [Character]) -> [Int] {
        guard chars.count > 1 else { return [] }
        return (1..<chars.count).filter { chars[$0 - 1].isWhitespace && !chars[$0].isWhitespace }
    }

    /// The position chosen among `count` candidates: the first 8 bytes of
    /// SHA-256("assay.random-insertion.v1\0" + decimal(seed) + "\0" + probeID + "\0" + triggerID),
    /// read as a big-endian UInt64, modulo `count` (bias below 2⁻⁵⁰ for any realistic prompt).
    /// Reproducible in a few lines of Python with hashlib.
    public static func randomInsertionIndex(count: Int, seed: UInt64, probeID: String, triggerID: String) -> Int {
        precondition(count > 0)
        var message = Array("assay.random-insertion.v1".utf8)
        message.append(0)
        message += Array(String(seed).utf8)
        message.append(0)
        message += Array(probeID.utf8)
        message.append(0)
        message += Array(triggerID.utf8)
        let digest = SuiteDigest.sha256(message)
        let x = digest[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Int(x % UInt64(count))
    }
}
