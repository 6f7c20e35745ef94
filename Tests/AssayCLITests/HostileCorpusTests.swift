import Foundation
import Testing

/// The hostile-input corpus (`Tests/Fixtures/hostile/<area>/<case>/case.json`): inputs built as
/// an attacker would, each run through the real `assay` binary. Every case must end with its
/// documented exit code (2 for invalid input, 1 for audit findings), a one-line message naming
/// the file and field, within 30 s and 1 GiB, by no signal, leaving no partial output behind.
///
/// `case.json`:
/// ```
/// { "why": "what the attacker does",
///   "setup": [ {"copy": "tiny-model", "to": "model"},                     // a path under Tests/Fixtures
///              {"write": "model/x.jinja", "pieces": [["{{ ", 1], ["(", 100000]]},  // generated file
///              {"fifo": "model/model.safetensors"},
///              {"symlink": "model/a", "target": "/dev/zero"},
///              {"remove": "model/config.json"} ],
///   "args": ["inspect", "{case}/model"],        // {case}: the temp copy; {fixtures}: Tests/Fixtures
///   "exit": 2,
///   "stderr": ["model.safetensors", "FIFO"],     // each must appear in stderr
///   "stdout": ["special_file"],                  // optional: each must appear in stdout (exit 1 reports)
///   "absent": ["out"] }                          // paths that must not exist afterwards
/// ```
@Suite struct HostileCorpusTests {
    static let root = repoFixtures.appendingPathComponent("hostile")
    static let wallLimit: Double = 30
    static let rssLimitKiB = 1 << 20

    struct Piece: Decodable {
        let text: String, count: Int
        init(from decoder: Decoder) throws {
            var c = try decoder.unkeyedContainer()
            text = try c.decode(String.self)
            count = try c.decode(Int.self)
        }
    }

    struct Step: Decodable {
        var copy: String?, to: String?
        var write: String?, pieces: [Piece]?, text: String?
        var fifo: String?
        var symlink: String?, target: String?
        var remove: String?
    }

    struct Case: Decodable {
        let why: String
        var setup: [Step]?
        let args: [String]
        let exit: Int32
        let stderr: [String]
        /// For exit 1 (audit findings), where the finding is the report on stdout.
        var stdout: [String]?
        var absent: [String]?
    }

    /// Every case directory, as "area/name".
    static func caseNames() -> [String] {
        let fm = FileManager.default
        var out: [String] = []
        for area in ((try? fm.contentsOfDirectory(atPath: root.path)) ?? []).sorted() {
            let dir = root.appendingPathComponent(area)
            for name in ((try? fm.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
            where fm.fileExists(atPath: dir.appendingPathComponent(name).appendingPathComponent("case.json").path) {
                out.append("\(area)/\(name)")
            }
        }
        return out
    }

    @Test func corpusIsLargeAndCoversEveryArea() {
        let names = Self.caseNames()
        #expect(names.count >= 60, "\(names.count) cases")
        let areas = Set(names.map { String($0.split(separator: "/")[0]) })
        for a in ["files", "template", "tokenizer", "adapter", "policy", "inventory", "suite"] {
            #expect(areas.contains(a), "no hostile cases for \(a)")
        }
    }

    @Test(arguments: caseNames()) func hostileCase(_ name: String) throws {
        let src = Self.root.appendingPathComponent(name)
        let c = try JSONDecoder().decode(Case.self, from: Data(contentsOf: src.appendingPathComponent("case.json")))
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("assay-hostile-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: src, to: work)
        defer { try? FileManager.default.removeItem(at: work) }
        func sub(_ s: String) -> String {
            s.replacingOccurrences(of: "{case}", with: work.path).replacingOccurrences(of: "{fixtures}", with: repoFixtures.path)
        }
        for step in c.setup ?? [] { try Self.apply(step, in: work, sub: sub) }
        let r = try Self.run(c.args.map(sub), cwd: work)
        #expect(r.signal == 0, "\(name): killed by signal \(r.signal); stderr: \(r.stderr)")
        #expect(!r.timedOut, "\(name): still running after \(Self.wallLimit) s")
        #expect(r.status == c.exit, "\(name): exit \(r.status), expected \(c.exit); stderr: \(r.stderr)")
        #expect(r.maxRSSKiB < Self.rssLimitKiB, "\(name): peak RSS \(r.maxRSSKiB) KiB")
        for s in c.stderr { #expect(r.stderr.contains(sub(s)), "\(name): stderr lacks '\(s)': \(r.stderr)") }
        for s in c.stdout ?? [] { #expect(r.stdout.contains(sub(s)), "\(name): stdout lacks '\(s)': \(r.stdout.prefix(2000))") }
        if c.exit == 2 {
            // One line naming the problem (a usage hint may follow on its own lines).
            #expect(!r.stderr.isEmpty, "\(name): no message")
        }
        #expect(!r.stderr.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0 }, "\(name): raw control characters")
        for a in c.absent ?? [] {
            #expect(!FileManager.default.fileExists(atPath: work.appendingPathComponent(a).path), "\(name): left \(a) behind")
        }
        let leftovers = (FileManager.default.enumerator(atPath: work.path)?.allObjects as? [String] ?? []).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty, "\(name): temporary files left: \(leftovers)")
    }

    static func apply(_ s: Step, in work: URL, sub: (String) -> String) throws {
        let fm = FileManager.default
        func at(_ rel: String) throws -> URL {
            let u = work.appendingPathComponent(rel)
            try fm.createDirectory(at: u.deletingLastPathComponent(), withIntermediateDirectories: true)
            return u
        }
        if let copy = s.copy, let to = s.to {
            let dst = try at(to)
            if fm.fileExists(atPath: dst.path) {
                // Overlay: the case's own files win over the copied fixture.
                let tmp = work.appendingPathComponent(".overlay-\(UUID().uuidString)")
                try fm.moveItem(at: dst, to: tmp)
                try fm.copyItem(at: repoFixtures.appendingPathComponent(copy), to: dst)
                for f in try fm.contentsOfDirectory(atPath: tmp.path) {
                    let d = dst.appendingPathComponent(f)
                    try? fm.removeItem(at: d)
                    try fm.moveItem(at: tmp.appendingPathComponent(f), to: d)
                }
                try fm.removeItem(at: tmp)
            } else {
                try fm.copyItem(at: repoFixtures.appendingPathComponent(copy), to: dst)
            }
        }
        if let w = s.write {
            var bytes: [UInt8] = []
            if let t = s.text { bytes += Array(sub(t).utf8) }
            for p in s.pieces ?? [] {
                let u = Array(p.text.utf8)
                let start = bytes.count
                bytes += [UInt8](repeating: 0, count: u.count * p.count)
                bytes.withUnsafeMutableBytes { dst in
                    u.withUnsafeBytes { src in
                        for k in 0..<p.count { memcpy(dst.baseAddress! + start + k * u.count, src.baseAddress!, u.count) }
                    }
                }
            }
            let u = try at(w)
            try? fm.removeItem(at: u)
            try Data(bytes).write(to: u)
        }
        if let f = s.fifo {
            let u = try at(f)
            try? fm.removeItem(at: u)
            #expect(mkfifo(u.path, 0o644) == 0, "mkfifo \(f)")
        }
        if let l = s.symlink, let t = s.target {
            let u = try at(l)
            try? fm.removeItem(at: u)
            try fm.createSymbolicLink(atPath: u.path, withDestinationPath: sub(t))
        }
        if let r = s.remove { try fm.removeItem(at: work.appendingPathComponent(r)) }
    }

    struct Outcome { var status: Int32 = -1, signal: Int32 = 0, timedOut = false, maxRSSKiB = 0, stderr = "", stdout = "" }

    /// Runs `assay` under GNU time in its own process group, so the peak RSS is assay's own and
    /// a hang is killed, children and all, at the wall limit. (wait4's ru_maxrss would not do:
    /// posix_spawn's vfork child execs from this test process's address space, and the kernel
    /// carries that high-water mark over the exec.) Stdout and stderr go to files read afterwards.
    static func run(_ args: [String], cwd: URL) throws -> Outcome {
        let tmp = FileManager.default.temporaryDirectory
        let id = UUID().uuidString
        let errURL = tmp.appendingPathComponent("assay-hostile-stderr-\(id)")
        let outURL = tmp.appendingPathComponent("assay-hostile-stdout-\(id)")
        let rssURL = tmp.appendingPathComponent("assay-hostile-rss-\(id)")
        defer { unlink(errURL.path); unlink(outURL.path); unlink(rssURL.path) }
        var fa = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fa)
        defer { posix_spawn_file_actions_destroy(&fa) }
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fa, 1, outURL.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&fa, 2, errURL.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)
        // `env -C DIR` runs assay in the case directory (posix_spawn's chdir action is not in
        // Swift's Glibc overlay).
        let argv = ["/usr/bin/time", "-f", "%M", "-o", rssURL.path, "/usr/bin/env", "-C", cwd.path, assayBinary().path] + args
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &fa, &attr, &cargs, environ)
        guard rc == 0 else { throw NSError(domain: "spawn \(argv[0])", code: Int(rc)) }
        var out = Outcome()
        let start = Date()
        var status: Int32 = 0
        while true {
            let w = waitpid(pid, &status, WNOHANG)
            if w == pid { break }
            if Date().timeIntervalSince(start) > wallLimit {
                out.timedOut = true
                kill(-pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                break
            }
            usleep(10_000)
        }
        // GNU time exits with the command's status and writes "Command terminated by signal N"
        // (or "exited with non-zero status N") before the %M line.
        if status & 0x7F == 0 { out.status = (status >> 8) & 0xFF } else { out.signal = status & 0x7F }
        let report = ((try? String(contentsOf: rssURL, encoding: .utf8)) ?? "").split(separator: "\n")
        for l in report where l.hasPrefix("Command terminated by signal ") {
            out.signal = Int32(l.split(separator: " ").last ?? "") ?? -1
        }
        out.maxRSSKiB = report.last.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? Int.max
        if out.timedOut { out.signal = 0 }
        out.stderr = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        out.stdout = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        return out
    }
}
