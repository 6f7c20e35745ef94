import Foundation

public extension String {
    /// The string with control characters, escape sequences and bidirectional overrides made
    /// visible (`\u{1B}`), so a hostile tensor or file name cannot drive the terminal or hide
    /// text when printed.
    var terminalSafe: String {
        var out = ""
        out.reserveCapacity(utf8.count)
        for s in unicodeScalars {
            switch s.value {
            case 0x00...0x1F, 0x7F...0x9F, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069:
                out += "\\u{\(String(s.value, radix: 16, uppercase: true))}"
            case 0x5C:
                out += "\\\\"
            default:
                out.unicodeScalars.append(s)
            }
        }
        return out
    }
}

public enum FileWriteError: Error, CustomStringConvertible, Sendable {
    case cannotCreate(path: String, reason: String)
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotCreate(path, reason): return "cannot write \(path.terminalSafe): \(reason)"
        case let .writeFailed(path, reason): return "writing \(path.terminalSafe) failed: \(reason)"
        }
    }
}

/// Writes a file so that readers see either the old file or the complete new one, never a
/// partial one: the bytes go to a temporary file in the same directory, which is renamed over
/// the destination only after every byte is written and synced.
public struct AtomicFileWriter: ~Copyable {
    public let destination: URL
    let temporary: URL
    let fd: Int32
    private var finished = false

    public init(destination: URL) throws(FileWriteError) {
        self.destination = destination
        let dir = destination.deletingLastPathComponent()
        let tmp = dir.appendingPathComponent(".\(destination.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw FileWriteError.cannotCreate(path: destination.path, reason: String(cString: strerror(errno)))
        }
        self.temporary = tmp
        self.fd = fd
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(FileWriteError) {
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileWriteError.writeFailed(path: destination.path, reason: String(cString: strerror(errno)))
            }
            done += n
        }
    }

    public func write(_ data: [UInt8]) throws(FileWriteError) {
        let r: Result<Void, FileWriteError> = data.withUnsafeBytes { b in
            do throws(FileWriteError) { try write(b); return .success(()) } catch { return .failure(error) }
        }
        try r.get()
    }

    /// Syncs, closes and renames into place.
    public consuming func commit() throws(FileWriteError) {
        finished = true
        if fsync(fd) != 0 || close(fd) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(temporary.path)
            throw FileWriteError.writeFailed(path: destination.path, reason: reason)
        }
        if rename(temporary.path, destination.path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(temporary.path)
            throw FileWriteError.writeFailed(path: destination.path, reason: reason)
        }
    }

    deinit {
        if !finished {
            close(fd)
            unlink(temporary.path)
        }
    }

    /// Writes `bytes` to `url` atomically.
    public static func write(_ bytes: [UInt8], to url: URL) throws(FileWriteError) {
        let w = try AtomicFileWriter(destination: url)
        try w.write(bytes)
        try w.commit()
    }

    public static func write(_ text: String, to url: URL) throws(FileWriteError) {
        try write(Array(text.utf8), to: url)
    }
}

/// Why a file could not be read safely. Every case names the path.
public enum SafeFileError: Error, CustomStringConvertible, Sendable, Equatable {
    case notFound(path: String)
    /// A directory, FIFO, socket or device where a regular file was expected.
    case notRegular(path: String, kind: String)
    case tooLarge(path: String, size: Int, limit: Int)
    case unreadable(path: String, reason: String)

    public var path: String {
        switch self {
        case let .notFound(p), let .notRegular(p, _), let .tooLarge(p, _, _), let .unreadable(p, _): return p
        }
    }

    /// The message without the path, for errors that name the file themselves.
    public var reasonOnly: String {
        switch self {
        case .notFound: return "no such file"
        case let .notRegular(_, kind): return "is \(kind), not a regular file; refusing to read it"
        case let .tooLarge(_, size, limit): return "\(size) bytes, over the \(limit)-byte limit for this kind of file"
        case let .unreadable(_, reason): return reason
        }
    }

    public var description: String {
        switch self {
        case let .notFound(p): return "\(p.terminalSafe): no such file"
        case let .notRegular(p, kind): return "\(p.terminalSafe): is \(kind), not a regular file; refusing to read it"
        case let .tooLarge(p, size, limit): return "\(p.terminalSafe): \(size) bytes, over the \(limit)-byte limit for this kind of file"
        case let .unreadable(p, reason): return "\(p.terminalSafe): cannot read: \(reason)"
        }
    }
}

/// The one way Assay opens a file it did not write: without blocking (a FIFO or device named
/// like a model file must not hang the scan), `fstat` on the open descriptor (no race between a
/// check and the open), regular files only, and a size bound checked before anything is
/// allocated. Symlinks are followed, as the audit follows those that stay inside a directory;
/// what matters is that the file finally opened is a regular file.
public enum SafeFile {
    /// Default bound for small structured files (configs, tokenizers, suites, policies,
    /// inventories, manifests): 512 MiB, far above any real one (a large tokenizer.json is ~20 MB).
    public static let defaultMaxBytes = 512 << 20

    /// What `st_mode` says a file is, in words for an error message.
    public static func kind(ofMode mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: return "a regular file"
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO"
        case S_IFSOCK: return "a socket"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFLNK: return "a symbolic link"
        default: return "a special file"
        }
    }

    /// Opens `path` read-only and returns the descriptor (the caller closes it) and the size.
    public static func open(_ path: String, maxBytes: Int = defaultMaxBytes) throws(SafeFileError) -> (fd: Int32, size: Int) {
        let fd = Foundation.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT || e == ENOTDIR { throw .notFound(path: path) }
            throw .unreadable(path: path, reason: String(cString: strerror(e)))
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw .unreadable(path: path, reason: reason)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw .notRegular(path: path, kind: kind(ofMode: st.st_mode))
        }
        let size = Int(st.st_size)
        guard size >= 0, size <= maxBytes else {
            close(fd)
            throw .tooLarge(path: path, size: size, limit: maxBytes)
        }
        // Back to blocking reads: a regular file never blocks, and some file systems reject
        // O_NONBLOCK reads with EAGAIN.
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        return (fd, size)
    }

    /// Reads a whole regular file of at most `maxBytes` bytes.
    public static func read(_ url: URL, maxBytes: Int = defaultMaxBytes) throws(SafeFileError) -> [UInt8] {
        try read(path: url.path, maxBytes: maxBytes)
    }

    public static func read(path: String, maxBytes: Int = defaultMaxBytes) throws(SafeFileError) -> [UInt8] {
        let (fd, size) = try open(path, maxBytes: maxBytes)
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = out.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress! + done, size - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .unreadable(path: path, reason: String(cString: strerror(errno)))
            }
            if n == 0 { break }  // the file shrank while being read: what was there is what we saw
            done += n
        }
        if done < size { out.removeSubrange(done...) }
        return out
    }

    /// The first `count` bytes of a regular file (fewer if it is shorter), however large it is.
    public static func readPrefix(_ url: URL, count: Int) throws(SafeFileError) -> [UInt8] {
        let (fd, size) = try open(url.path, maxBytes: Int.max)
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: min(count, size))
        var done = 0
        while done < out.count {
            let n = out.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .unreadable(path: url.path, reason: String(cString: strerror(errno)))
            }
            if n == 0 { break }
            done += n
        }
        return Array(out.prefix(done))
    }

    /// Reads a file as UTF-8 text; invalid UTF-8 is an error naming the byte offset.
    public static func readText(_ url: URL, maxBytes: Int = defaultMaxBytes) throws(SafeFileError) -> String {
        let bytes = try read(url, maxBytes: maxBytes)
        if let bad = firstInvalidUTF8(bytes) {
            throw .unreadable(path: url.path, reason: "not valid UTF-8 at byte \(bad)")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// True when `url` exists and is (after following symlinks) a regular file.
    public static func isRegularFile(_ url: URL) -> Bool {
        var st = stat()
        return stat(url.path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// True when something (of any kind, dangling symlinks included) exists at `url`.
    public static func exists(_ url: URL) -> Bool {
        var st = stat()
        return lstat(url.path, &st) == 0
    }

    /// The offset of the first byte that is not part of a well-formed UTF-8 sequence (Unicode
    /// Table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF), or nil.
    public static func firstInvalidUTF8(_ b: [UInt8]) -> Int? {
        var i = 0
        let n = b.count
        while i < n {
            let c = b[i]
            if c < 0x80 { i += 1; continue }
            let len: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch c {
            case 0xC2...0xDF: len = 2
            case 0xE0: len = 3; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: len = 3
            case 0xED: len = 3; hi = 0x9F
            case 0xF0: len = 4; lo = 0x90
            case 0xF1...0xF3: len = 4
            case 0xF4: len = 4; hi = 0x8F
            default: return i
            }
            guard i + len <= n else { return i }
            guard b[i + 1] >= lo && b[i + 1] <= hi else { return i }
            for j in 2..<len where b[i + j] & 0xC0 != 0x80 { return i }
            i += len
        }
        return nil
    }
}
