import Foundation
import AssayCommon
#if canImport(Glibc)
import Glibc
#endif

// Isolation: model work (audit, load, scan) runs in a child process of Assay — the same binary,
// `/proc/self/exe sweep-worker` — under resource limits, so a model that traps the Swift runtime,
// overflows the stack, or exhausts memory or CPU ends that child, not the sweep (or the CI gate
// running `assay scan --isolate`). One implementation serves both: `WorkerProcess` (spawn, the
// channel, the end), `ResourceLimits` (what the worker applies to itself), `WorkerExit.describe`
// (the signal or limit, named). docs/sweeps.md, "Isolation and limits", documents the behaviour.

/// Address-space and CPU-time limits of an isolated worker.
///
/// The worker applies them to itself (`setrlimit`) after its crash reporter is installed and
/// before it reads any model file: the worker is Assay's own code (hostile models are only data
/// to it), Linux's `posix_spawn` has no way to set limits in the child, and limits set from the
/// parent before the crash reporter is in place would turn an allocation failure during start-up
/// into an anonymous trap.
public struct ResourceLimits: Sendable, Codable, Equatable {
    /// RLIMIT_AS for the whole worker process, in bytes (nil: unlimited). It counts address space,
    /// not resident memory: mapped weight files count in full.
    public var addressSpaceBytes: UInt64?
    /// RLIMIT_CPU per entry (per scan), in CPU seconds summed over threads (nil: unlimited).
    public var cpuSeconds: UInt64?
    /// Wall-clock time per entry (per scan), enforced by the parent, which kills the worker
    /// (nil: unlimited). It bounds what the CPU limit cannot: a worker that hangs without
    /// computing (a blocked read, a deadlock).
    public var wallSeconds: UInt64?

    public init(addressSpaceBytes: UInt64? = ResourceLimits.defaultAddressSpaceBytes,
                cpuSeconds: UInt64? = ResourceLimits.defaultCPUSeconds, wallSeconds: UInt64? = ResourceLimits.defaultWallSeconds) {
        self.addressSpaceBytes = addressSpaceBytes
        self.cpuSeconds = cpuSeconds
        self.wallSeconds = wallSeconds
    }

    /// Four hours per entry: twice the CPU budget's two hours on one core, so on a busy machine a
    /// slow but working scan reaches its CPU limit (and is named for it) before this one.
    public static let defaultWallSeconds: UInt64 = 14_400

    /// The smaller of 16 GiB and 75% of physical memory: a worker cannot push the machine into
    /// swap or the OOM killer (which might pick the sweep itself), and 16 GiB holds a pair of
    /// 3B-parameter bf16 models with room for activations.
    public static var defaultAddressSpaceBytes: UInt64 {
        min(16 << 30, ProcessInfo.processInfo.physicalMemory / 4 * 3)
    }

    /// Two hours of CPU per entry: generous for any real scan on CPU (SmolLM2-135M takes about a
    /// minute of CPU), and still a bound on a model that makes the scan spin.
    public static let defaultCPUSeconds: UInt64 = 7200

    /// Parses a memory size: `16G`, `512M`, `64MiB`, `1.5GiB`, a plain number of bytes, or `none`.
    public static func parseBytes(_ text: String) -> UInt64?? {
        let s = text.trimmingCharacters(in: .whitespaces).lowercased()
        if s == "none" || s == "unlimited" { return .some(nil) }
        let units: [(String, Double)] = [("tib", 0x1p40), ("gib", 0x1p30), ("mib", 0x1p20), ("kib", 0x1p10),
                                        ("t", 0x1p40), ("g", 0x1p30), ("m", 0x1p20), ("k", 0x1p10), ("b", 1), ("", 1)]
        for (suffix, scale) in units where s.hasSuffix(suffix) {
            guard let n = Double(s.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), n.isFinite, n > 0 else { continue }
            let bytes = n * scale
            guard bytes >= 1, bytes < 0x1p62 else { return nil }
            return .some(UInt64(bytes))
        }
        return nil
    }

    /// Parses a CPU time: `7200`, `90s`, `30m`, `2h`, or `none`.
    public static func parseSeconds(_ text: String) -> UInt64?? {
        let s = text.trimmingCharacters(in: .whitespaces).lowercased()
        if s == "none" || s == "unlimited" { return .some(nil) }
        for (suffix, scale) in [("h", 3600.0), ("m", 60), ("s", 1), ("", 1)] where s.hasSuffix(suffix) {
            guard let n = Double(s.dropLast(suffix.count)), n.isFinite, n > 0 else { continue }
            let seconds = (n * scale).rounded(.up)
            guard seconds >= 1, seconds < 1e12 else { return nil }
            return .some(UInt64(seconds))
        }
        return nil
    }

    /// `16 GiB`, `512 MiB`, `1.5 GiB`, or bytes.
    public static func formatBytes(_ b: UInt64) -> String {
        for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] where b >= 1 << UInt64(shift) {
            let v = Double(b) / Double(UInt64(1) << UInt64(shift))
            return v == v.rounded() ? "\(Int(v)) \(unit)" : String(format: "%.1f %@", v, unit)
        }
        return "\(b) bytes"
    }

    public var summary: String {
        "memory \(addressSpaceBytes.map(Self.formatBytes) ?? "unlimited"), CPU \(cpuSeconds.map { "\($0) s" } ?? "unlimited") "
            + "and wall clock \(wallSeconds.map { "\($0) s" } ?? "unlimited") per entry"
    }

    #if os(Linux)
    static func set(_ resource: Int32, soft: rlim_t, hard: rlim_t) throws(IsolationError) {
        var rl = rlimit(rlim_cur: soft, rlim_max: hard)
        guard setrlimit(__rlimit_resource_t(UInt32(resource)), &rl) == 0 else {
            throw .worker("setrlimit(\(resource)) failed: \(String(cString: strerror(errno)))")
        }
    }
    #endif

    /// An error the worker caught, attributed to the address-space limit when the process is at
    /// it. Under RLIMIT_AS the first failing allocation may be one that reports an error (a
    /// directory listing, a file read) rather than one that traps, depending on where the
    /// process happens to be; either way the cause is the limit, and the message must say so.
    /// "At the limit" is tested directly: 8 MiB more cannot be mapped.
    public func attribute(_ message: String, prefix: String = "") -> String {
        guard let limit = addressSpaceBytes else { return message }
        if let p = malloc(8 << 20) { free(p); return message }
        return prefix + "exceeded the address-space limit of \(ResourceLimits.formatBytes(limit)) (an allocation failed: \(message))"
    }

    /// Applied once by the worker: the address-space limit (soft = hard, so model code cannot
    /// raise it) and no core files (a trapped worker holding a model would write gigabytes).
    func applyToWorker() throws(IsolationError) {
        #if os(Linux)
        try Self.set(Int32(RLIMIT_CORE.rawValue), soft: 0, hard: 0)
        if let b = addressSpaceBytes { try Self.set(Int32(RLIMIT_AS.rawValue), soft: rlim_t(b), hard: rlim_t(b)) }
        #endif
    }

    /// Starts one entry's CPU budget: the soft limit becomes the CPU this process has used so far
    /// plus the budget; past it the kernel sends SIGXCPU, whose default action ends the worker.
    /// The hard limit stays unlimited (an unprivileged process cannot raise a hard limit, and the
    /// next entry must move the soft one on). This is what makes one worker per base group
    /// possible — the group's entries share the base's outputs — while each entry still gets its
    /// own budget.
    func startCPUBudget() throws(IsolationError) {
        #if os(Linux)
        guard let budget = cpuSeconds else { return }
        var ru = rusage()
        getrusage(RUSAGE_SELF.rawValue, &ru)
        let used = UInt64(ru.ru_utime.tv_sec) + UInt64(ru.ru_stime.tv_sec) + 1
        try Self.set(Int32(RLIMIT_CPU.rawValue), soft: rlim_t(used + budget), hard: rlim_t.max)  // RLIM_INFINITY
        #endif
    }
}

/// Why isolated work could not run or did not finish.
public enum IsolationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The worker could not be started, or the channel to it broke.
    case worker(String)
    /// The worker ended without a result: the signal or limit named.
    case crashed(String)
    /// The isolated scan failed with an ordinary error (its message, as the scan gives it).
    case failed(String)

    public var description: String {
        switch self {
        case let .worker(m): return "isolated worker: \(m)"
        case let .crashed(m): return m
        case let .failed(m): return m
        }
    }
}

/// What the worker's crash reporter saw: the fatal signal and the thread's errno at that moment.
/// An allocation failure under RLIMIT_AS reaches the Swift runtime as malloc returning NULL
/// (errno ENOMEM), and the runtime then traps (SIGILL on x86-64, SIGTRAP on arm64): errno is
/// what tells that trap from any other.
public struct CrashNote: Codable, Sendable, Equatable {
    public var signal: Int32
    public var errno: Int32
    public init(signal: Int32, errno: Int32) { self.signal = signal; self.errno = errno }
}

/// How a worker ended.
public enum WorkerExit: Sendable, Equatable {
    case exited(Int32)
    case signaled(Int32)

    static let names: [Int32: String] = [
        1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL",
        10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 24: "SIGXCPU", 25: "SIGXFSZ",
        31: "SIGSYS",
    ]

    static func meaning(_ s: Int32) -> String {
        let name = names[s] ?? "signal \(s)"
        switch s {
        case 4, 5: return "\(name): a Swift runtime trap"
        case 6: return "\(name): aborted"
        case 7: return "\(name): a bad memory access, e.g. a mapped file truncated while read"
        case 8: return "\(name): an arithmetic fault"
        case 9: return "\(name): killed by the kernel's out-of-memory killer or by hand"
        case 11: return "\(name): a stack overflow or an invalid memory access"
        default: return name
        }
    }

    /// The end in words, naming the signal or the limit breached: what becomes an entry's error.
    /// `stderr` is the tail of what the worker wrote there (the Swift runtime's `Fatal error:`
    /// line, when it gave one).
    public func describe(crash: CrashNote?, limits: ResourceLimits, stderr: String) -> String {
        let detail = Self.runtimeMessage(stderr).map { " — \($0)" } ?? ""
        switch self {
        case let .signaled(s):
            if s == SIGXCPU, let c = limits.cpuSeconds { return "exceeded the CPU limit of \(c) s (killed by signal \(s), SIGXCPU)" }
            // An allocation failure: errno ENOMEM at the fatal signal, or the runtime saying so
            // (Swift 6's "failed to allocate N bytes"). Without either, a trap is a trap.
            let noted = crash.map { $0.signal == s && $0.errno == ENOMEM } ?? false
            let said = Self.runtimeMessage(stderr).map { $0.contains("failed to allocate") || $0.contains("Could not allocate") } ?? false
            if let b = limits.addressSpaceBytes, noted || said, [4, 5, 6, 7, 11].contains(s) {
                let how = noted ? "with errno ENOMEM" : "the runtime reports an allocation failure"
                return "exceeded the address-space limit of \(ResourceLimits.formatBytes(b)) "
                    + "(an allocation failed: killed by signal \(s), \(Self.names[s] ?? "?"), \(how))\(detail)"
            }
            return "killed by signal \(s) (\(Self.meaning(s)))\(detail)"
        case let .exited(code):
            let last = Self.lastLine(stderr).map { ": \($0)" } ?? ""
            return "the worker exited with status \(code) before reporting a result\(last)"
        }
    }

    /// The last line of the Swift runtime's own crash message (fatalError, precondition), if any.
    static func runtimeMessage(_ stderr: String) -> String? {
        let marks = ["Fatal error", "Precondition failed", "Assertion failed", "Could not allocate"]
        return stderr.split(separator: "\n").last { l in marks.contains { l.contains($0) } }
            .map { String($0.prefix(300)).terminalSafe }
    }

    static func lastLine(_ stderr: String) -> String? {
        stderr.split(separator: "\n").last { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.map { String($0.prefix(300)).terminalSafe }
    }
}

/// Where the isolated worker comes from and what it runs under.
public struct IsolationOptions: Sendable {
    /// The Assay binary the worker runs (default: this process's own executable).
    public var executable = WorkerProcess.selfExecutable
    public var limits = ResourceLimits()
    /// Threads the worker computes with (nil: all cores).
    public var threads: Int?
    public init() {}
}

/// Kills a worker whose entry runs past the wall-clock limit. Armed when an entry begins and
/// disarmed when it ends; the timer runs on its own queue, so it fires while the parent is blocked
/// reading the worker's channel.
final class WallClockWatchdog: @unchecked Sendable {
    let seconds: UInt64?
    private let pid: pid_t
    private let queue = DispatchQueue(label: "assay.watchdog")
    private let lock = NSLock()
    private var timer: DispatchSourceTimer?
    private var didFire = false

    init(seconds: UInt64?, worker: WorkerProcess) {
        self.seconds = seconds
        self.pid = worker.pid
    }

    /// Starts (or restarts) the clock for the next entry.
    func arm() {
        guard let seconds else { return }
        disarm()
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + .seconds(Int(min(seconds, UInt64(Int32.max)))))
        let pid = self.pid
        t.setEventHandler { [weak self] in
            guard let self else { return }
            self.lock.lock()
            self.didFire = true
            self.lock.unlock()
            // The worker is not reaped until the parent's wait(), so the pid is still ours.
            kill(pid, SIGKILL)
        }
        lock.lock()
        timer = t
        lock.unlock()
        t.resume()
    }

    func disarm() {
        lock.lock()
        let t = timer
        timer = nil
        lock.unlock()
        t?.cancel()
    }

    var fired: Bool {
        lock.lock()
        defer { lock.unlock() }
        return didFire
    }

    /// The entry's error when the limit ended the worker.
    func breach() -> String? {
        guard fired, let seconds else { return nil }
        return "exceeded the wall-clock limit of \(seconds) s (killed by signal \(SIGKILL), SIGKILL)"
    }
}

/// One worker child: spawned with posix_spawn (no shell), a socket pair as fd 3 for JSON lines
/// both ways, stdin from /dev/null, stdout and stderr into a pipe whose tail is kept for messages.
public final class WorkerProcess {
    /// The running binary itself: `/proc/self/exe` names it even if the file was replaced or
    /// deleted since (an upgrade during a nightly sweep).
    public static var selfExecutable: String {
        #if os(Linux)
        return "/proc/self/exe"
        #else
        return Bundle.main.executablePath ?? CommandLine.arguments[0]
        #endif
    }

    /// The hidden subcommand that serves a worker request (AssayCLI registers it).
    public static let subcommand = "sweep-worker"
    /// The fd the worker finds its channel on.
    static let channelFD: Int32 = 3
    /// A line longer than this from the worker is a protocol error, not an allocation.
    static let maxLine = 512 << 20

    public let pid: pid_t
    let channel: Int32
    let tail: StderrTail
    var buffer: [UInt8] = []
    var reaped: WorkerExit?

    init(pid: pid_t, channel: Int32, tail: StderrTail) {
        self.pid = pid
        self.channel = channel
        self.tail = tail
    }

    deinit {
        if reaped == nil { kill(pid, SIGKILL); _ = wait() }
    }

    /// Starts `executable sweep-worker --threads N`.
    public static func spawn(_ options: IsolationOptions) throws(IsolationError) -> WorkerProcess {
        // argv[0] the binary's real path, so `ps` shows which assay runs; exec'd through
        // /proc/self/exe all the same.
        let shown = options.executable == "/proc/self/exe"
            ? ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? options.executable) : options.executable
        var args = [shown, subcommand]
        if let t = options.threads { args += ["--threads", String(t)] }
        // The worker never touches the history: it needs no database password.
        var env = ProcessInfo.processInfo.environment
        env["PGPASSWORD"] = nil
        // The runtime's backtracer would spend seconds symbolicating every crash; the signal and
        // the runtime's one-line message are what the entry's error needs.
        env["SWIFT_BACKTRACE"] = "enable=no"
        return try spawn(executable: options.executable, arguments: args, environment: env)
    }

    static func spawn(executable: String, arguments: [String], environment: [String: String]) throws(IsolationError) -> WorkerProcess {
        #if os(Linux)
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw .worker("socketpair: \(String(cString: strerror(errno)))")
        }
        var errPipe: [Int32] = [-1, -1]
        // pipe2 is not in Swift's Glibc module; nothing else spawns while a sweep does.
        guard pipe(&errPipe) == 0, fcntl(errPipe[0], F_SETFD, FD_CLOEXEC) == 0, fcntl(errPipe[1], F_SETFD, FD_CLOEXEC) == 0 else {
            close(pair[0]); close(pair[1])
            throw .worker("pipe: \(String(cString: strerror(errno)))")
        }
        // Above the fds the child is given, so no dup2 maps an fd onto itself (which would keep its
        // close-on-exec flag).
        func lift(_ fd: Int32) -> Int32 {
            guard fd < 10 else { return fd }
            let high = fcntl(fd, F_DUPFD_CLOEXEC, 10)
            close(fd)
            return high
        }
        let childEnd = lift(pair[1]), errWrite = lift(errPipe[1])
        let parentEnd = pair[0], errRead = errPipe[0]
        defer { close(childEnd); close(errWrite) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, errWrite, 1)
        posix_spawn_file_actions_adddup2(&actions, errWrite, 2)
        posix_spawn_file_actions_adddup2(&actions, childEnd, channelFD)
        // Nothing else of the parent's (the history's file or socket) reaches the child.
        addCloseFrom(&actions, channelFD + 1)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv + envp { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attr, argv, envp)
        guard rc == 0 else {
            close(parentEnd); close(errRead)
            throw .worker("cannot start \(executable.terminalSafe): \(String(cString: strerror(rc)))")
        }
        return WorkerProcess(pid: pid, channel: parentEnd, tail: StderrTail(fd: errRead))
        #else
        throw .worker("isolation needs Linux")
        #endif
    }

    #if os(Linux)
    /// glibc ≥ 2.34 has posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module does
    /// not declare; found at run time, and skipped (every fd Assay opens is close-on-exec anyway)
    /// where it is missing.
    static func addCloseFrom(_ actions: inout posix_spawn_file_actions_t, _ from: Int32) {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let sym = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return }
        _ = unsafeBitCast(sym, to: CloseFrom.self)(&actions, from)
    }
    #endif

    /// Sends one JSON line.
    public func send<T: Encodable>(_ value: T) throws(IsolationError) {
        try Self.writeLine(channel, value)
    }

    /// The next JSON line from the worker (nil: the worker closed the channel or died).
    public func receive<T: Decodable>(_ type: T.Type) throws(IsolationError) -> T? {
        guard let line = try Self.readLine(channel, &buffer) else { return nil }
        do { return try WireJSON.decoder.decode(T.self, from: Data(line)) } catch {
            throw .worker("unreadable message from the worker: \(String(decoding: line.prefix(200), as: UTF8.self).terminalSafe)")
        }
    }

    /// Ends the worker at once (a protocol error).
    public func terminate() { if reaped == nil { kill(pid, SIGKILL) } }

    /// Waits for the worker to end (closing the channel first, so a worker waiting for the parent
    /// sees end of file and stops).
    @discardableResult
    public func wait() -> WorkerExit {
        if let reaped { return reaped }
        close(channel)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        tail.finish()
        // WIFSIGNALED / WTERMSIG / WEXITSTATUS, which Swift does not import (they are macros).
        let sig = status & 0x7F
        let end: WorkerExit = sig != 0 && sig != 0x7F ? .signaled(sig) : .exited((status >> 8) & 0xFF)
        reaped = end
        return end
    }

    /// What the worker wrote on stdout and stderr (the last 64 KiB).
    public var stderr: String { tail.text }

    static func writeLine<T: Encodable>(_ fd: Int32, _ value: T) throws(IsolationError) {
        var bytes: [UInt8]
        do { bytes = Array(try WireJSON.encoder.encode(value)) } catch { throw .worker("cannot encode a message: \(error)") }
        bytes.append(0x0A)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .worker("the channel closed (\(String(cString: strerror(errno))))")
            }
            done += n
        }
    }

    static func readLine(_ fd: Int32, _ buffer: inout [UInt8]) throws(IsolationError) -> [UInt8]? {
        var scanned = 0
        while true {
            if let nl = buffer[scanned...].firstIndex(of: 0x0A) {
                let line = Array(buffer[..<nl])
                buffer.removeSubrange(...nl)
                if line.isEmpty { scanned = 0; continue }  // the crash reporter starts its line on a fresh one
                return line
            }
            scanned = buffer.count
            guard buffer.count <= maxLine else { throw .worker("a message from the worker exceeds \(maxLine >> 20) MiB") }
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if n == 0 { return nil }
            buffer += chunk[..<n]
        }
    }
}

/// JSON on the worker channel: one object per line; non-finite doubles as strings (a report may
/// hold them), dates never (none cross).
enum WireJSON {
    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }
    static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return d
    }
}

/// Drains a worker's stderr on its own thread (a full pipe would stall the worker), keeping the
/// last 64 KiB for error messages.
final class StderrTail: @unchecked Sendable {
    let fd: Int32
    let lock = NSLock()
    var bytes: [UInt8] = []
    let done = DispatchSemaphore(value: 0)
    static let keep = 64 << 10

    init(fd: Int32) {
        self.fd = fd
        let t = Thread { [self] in drain() }
        t.name = "assay-worker-stderr"
        t.start()
    }

    func drain() {
        var chunk = [UInt8](repeating: 0, count: 1 << 14)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            lock.withLock {
                bytes += chunk[..<n]
                if bytes.count > 2 * Self.keep { bytes.removeFirst(bytes.count - Self.keep) }
            }
        }
        close(fd)
        done.signal()
    }

    /// Waits until the worker's end of the pipe is closed (it has exited).
    func finish() { done.wait(); done.signal() }

    var text: String { lock.withLock { String(decoding: bytes.suffix(Self.keep), as: UTF8.self) } }
}

// MARK: - worker side

/// The worker's end: the channel on fd 3, the crash reporter, the limits.
public final class WorkerChannel: @unchecked Sendable {
    let fd: Int32
    var buffer: [UInt8] = []
    let lock = NSLock()

    /// Checks that fd 3 is the channel a parent set up (this command is not for people to run).
    public init() throws(IsolationError) {
        fd = WorkerProcess.channelFD
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw .worker("`assay \(WorkerProcess.subcommand)` is started by `assay sweep` and `assay scan --isolate`, not by hand")
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    /// Sends one JSON line (thread-safe: progress comes from compute threads).
    func send<T: Encodable>(_ value: T) throws(IsolationError) {
        lock.lock()
        defer { lock.unlock() }
        try WorkerProcess.writeLine(fd, value)
    }

    func receive<T: Decodable>(_ type: T.Type) throws(IsolationError) -> T {
        guard let line = try WorkerProcess.readLine(fd, &buffer) else { throw .worker("the parent closed the channel") }
        do { return try WireJSON.decoder.decode(T.self, from: Data(line)) } catch {
            throw .worker("unreadable request: \(error)")
        }
    }

    /// Dies with the parent: a worker whose sweep was killed must not scan on for an hour.
    /// PR_SET_PDEATHSIG (prctl is variadic, so Swift cannot call it directly: found by name and
    /// called with its five integer arguments, as the x86-64 and AArch64 calling conventions
    /// allow). Ties the worker to the parent's spawning thread, which is the sweep's own.
    func dieWithParent(_ parent: pid_t) throws(IsolationError) {
        #if os(Linux)
        typealias Prctl = @convention(c) (Int32, UInt, UInt, UInt, UInt) -> Int32
        if let sym = dlsym(nil, "prctl") {
            _ = unsafeBitCast(sym, to: Prctl.self)(1 /* PR_SET_PDEATHSIG */, UInt(SIGKILL), 0, 0, 0)
        }
        if getppid() != parent { throw .worker("the parent exited") }
        #endif
    }
}

/// Writes `\n{"crash":{"signal":S,"errno":E}}\n` on the channel when the worker is about to die
/// of a fatal signal, then lets the signal take its default action. Process-wide by nature
/// (signal dispositions are), installed once by the worker before any model work; the handler
/// allocates nothing and calls only write(2), on an alternate stack so a stack overflow reports
/// too.
enum CrashReporter {
    nonisolated(unsafe) static var fd: Int32 = -1
    nonisolated(unsafe) static var line: UnsafeMutablePointer<UInt8> = .allocate(capacity: 96)

    static func install(fd: Int32) {
        #if os(Linux)
        Self.fd = fd
        _ = Self.line
        let size = 1 << 16
        var stack = stack_t()
        stack.ss_sp = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        stack.ss_size = size
        stack.ss_flags = 0
        sigaltstack(&stack, nil)
        var sa = sigaction()
        sa.__sigaction_handler.sa_sigaction = crashHandler
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | Int32(bitPattern: UInt32(SA_RESETHAND))
        sigemptyset(&sa.sa_mask)
        for s in [SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV] { sigaction(s, &sa, nil) }
        #endif
    }
}

#if os(Linux)
/// The signal handler: errno first (the interrupted thread's), then one write. SA_RESETHAND has
/// already restored the default action, so returning re-runs the faulting instruction (or
/// abort's re-raise) and the worker dies of the original signal, which the parent sees. No
/// closures, no strings: only pointer stores (this runs after malloc may have failed).
private func crashHandler(_ sig: Int32, _ info: UnsafeMutablePointer<siginfo_t>?, _ context: UnsafeMutableRawPointer?) {
    let savedErrno = errno
    let p = CrashReporter.line
    var n = appendBytes("\n{\"crash\":{\"signal\":", to: p, at: 0)
    n = appendDigits(sig, to: p, at: n)
    n = appendBytes(",\"errno\":", to: p, at: n)
    n = appendDigits(savedErrno, to: p, at: n)
    n = appendBytes("}}\n", to: p, at: n)
    _ = write(CrashReporter.fd, p, n)
    errno = savedErrno
}

private func appendBytes(_ s: StaticString, to p: UnsafeMutablePointer<UInt8>, at start: Int) -> Int {
    let src = s.utf8Start
    var i = 0
    while i < s.utf8CodeUnitCount { p[start + i] = src[i]; i += 1 }
    return start + i
}

private func appendDigits(_ v: Int32, to p: UnsafeMutablePointer<UInt8>, at start: Int) -> Int {
    var n = start
    var x = Int(v)
    if x < 0 { p[n] = 0x2D; n += 1; x = -x }
    var digits = 1, t = x
    while t >= 10 { t /= 10; digits += 1 }
    var i = digits - 1
    while i >= 0 { p[n + i] = UInt8(0x30 + x % 10); x /= 10; i -= 1 }
    return n + digits
}
#endif
