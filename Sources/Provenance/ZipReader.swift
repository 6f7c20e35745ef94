import Foundation
import AssayCommon

// A read-only ZIP reader for PyTorch archives (APPNOTE.TXT 6.3). It reads the archive the way
// PyTorch's PyTorchStreamReader (miniz) does: members come from the central directory, each
// member's data starts after its local header's name and extra fields, sizes come from the
// central directory (zip64 extra fields included), CRCs and general-purpose flag bits are not
// enforced (PyTorch builds miniz with MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS). It never extracts
// to disk and never allocates by a declared size: member bytes are slices of the mapped file.

/// One member, as the central directory declares it.
public struct ZipEntry: Sendable, Equatable {
    public let name: String
    public let flags: UInt16
    public let method: UInt16
    public let crc32: UInt32
    public let compressedSize: UInt64
    public let uncompressedSize: UInt64
    public let localHeaderOffset: UInt64
    /// Where the member's bytes start in the file, when the local header could be read.
    public var dataOffset: Int?
    /// The member's bytes are inside the file (`dataOffset + compressedSize <= file size`).
    public var inBounds: Bool

    public var dataRange: Range<Int>? {
        guard let d = dataOffset, inBounds else { return nil }
        return d..<(d + Int(compressedSize))
    }
}

/// Something wrong or unusual about the archive's structure.
public struct ZipIssue: Sendable, Equatable {
    public let code: String
    public let severity: Severity
    public let member: String?
    public let offset: Int?
    public let message: String
    /// The issue means part of the archive was not analysed.
    public let incomplete: Bool
}

public struct ZipArchive: Sendable {
    public var entries: [ZipEntry] = []
    public var issues: [ZipIssue] = []
    public var declaredEntries: UInt64 = 0
    public var zip64 = false
}

public struct ZipStructureError: Error, Sendable, Equatable, CustomStringConvertible {
    public let offset: Int?
    public let message: String
    public var description: String { offset.map { "\(message) (byte \($0))" } ?? message }
}

public enum ZipReader {
    public static let defaultMaxEntries = 65_536

    /// Reads the central directory. Throws only when there is no usable central directory at
    /// all; every other problem is an issue on the returned archive.
    public static func read(_ b: UnsafeRawBufferPointer, maxEntries: Int = defaultMaxEntries) throws(ZipStructureError) -> ZipArchive {
        let n = b.count
        func u16(_ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
        func u32(_ o: Int) -> UInt32 { UInt32(u16(o)) | UInt32(u16(o + 2)) << 16 }
        func u64(_ o: Int) -> UInt64 { UInt64(u32(o)) | UInt64(u32(o + 4)) << 32 }

        // End of central directory: the last signature within 64 KiB + 22 bytes of the end.
        guard n >= 22 else { throw ZipStructureError(offset: nil, message: "file is \(n) bytes, too small for a ZIP archive") }
        var eocd = -1
        var i = n - 22
        let lowest = max(0, n - 22 - 65_535)
        while i >= lowest {
            if b[i] == 0x50, b[i + 1] == 0x4B, b[i + 2] == 0x05, b[i + 3] == 0x06 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw ZipStructureError(offset: nil, message: "no end-of-central-directory record") }
        var archive = ZipArchive()
        var total = UInt64(u16(eocd + 10))
        var cdSize = UInt64(u32(eocd + 12))
        var cdOffset = UInt64(u32(eocd + 16))

        // Zip64: locator 20 bytes before the EOCD record, pointing at the zip64 EOCD record.
        if eocd >= 20, n >= 56, u32(eocd - 20) == 0x0706_4B50 {
            let rec = u64(eocd - 20 + 8)
            guard rec <= UInt64(n - 56), u32(Int(rec)) == 0x0606_4B50 else {
                throw ZipStructureError(offset: eocd - 20,
                                        message: "zip64 locator points at \(rec), which is not a zip64 end-of-central-directory record")
            }
            let r = Int(rec)
            archive.zip64 = true
            total = u64(r + 32)
            cdSize = u64(r + 40)
            cdOffset = u64(r + 48)
        }
        archive.declaredEntries = total
        guard cdOffset <= UInt64(n), cdSize <= UInt64(n) - cdOffset else {
            throw ZipStructureError(offset: eocd,
                                    message: "central directory (offset \(cdOffset), \(cdSize) bytes) lies outside the \(n)-byte file")
        }
        var count = total
        if total > UInt64(maxEntries) {
            archive.issues.append(ZipIssue(code: "zip_member_limit", severity: .high, member: nil, offset: eocd,
                                           message: "archive declares \(total) members, more than the limit of \(maxEntries); only the "
                                               + "first \(maxEntries) were read",
                                           incomplete: true))
            count = UInt64(maxEntries)
        }

        var p = Int(cdOffset)
        let cdEnd = Int(cdOffset + cdSize)
        var seen: [String: Int] = [:]
        archive.entries.reserveCapacity(Int(min(count, 4096)))
        for k in 0..<Int(count) {
            guard p + 46 <= cdEnd, u32(p) == 0x0201_4B50 else {
                archive.issues.append(ZipIssue(code: "zip_malformed", severity: .high, member: nil, offset: p,
                                               message: "central directory entry \(k) of \(total) is missing or has a bad signature",
                                               incomplete: true))
                break
            }
            let flags = u16(p + 8), method = u16(p + 10), crc = u32(p + 16)
            var csize = UInt64(u32(p + 20)), usize = UInt64(u32(p + 24))
            let nameLen = Int(u16(p + 28)), extraLen = Int(u16(p + 30)), commentLen = Int(u16(p + 32))
            var local = UInt64(u32(p + 42))
            guard p + 46 + nameLen + extraLen + commentLen <= cdEnd else {
                archive.issues.append(ZipIssue(code: "zip_malformed", severity: .high, member: nil, offset: p,
                                               message: "central directory entry \(k) runs past the end of the central directory",
                                               incomplete: true))
                break
            }
            let nameBytes = UnsafeRawBufferPointer(rebasing: b[(p + 46)..<(p + 46 + nameLen)])
            let name = String(decoding: nameBytes, as: UTF8.self)
            // Zip64 extended information (header 0x0001): only the fields that are 0xFFFFFFFF, in order.
            var e = p + 46 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let id = u16(e), len = Int(u16(e + 2))
                guard e + 4 + len <= extraEnd else { break }
                if id == 0x0001 {
                    var f = e + 4
                    if usize == 0xFFFF_FFFF, f + 8 <= e + 4 + len { usize = u64(f); f += 8 }
                    if csize == 0xFFFF_FFFF, f + 8 <= e + 4 + len { csize = u64(f); f += 8 }
                    if local == 0xFFFF_FFFF, f + 8 <= e + 4 + len { local = u64(f); f += 8 }
                }
                e += 4 + len
            }
            p += 46 + nameLen + extraLen + commentLen

            var entry = ZipEntry(name: name, flags: flags, method: method, crc32: crc, compressedSize: csize,
                                 uncompressedSize: usize, localHeaderOffset: local, dataOffset: nil, inBounds: false)
            if let problem = unsafeName(name, raw: nameBytes) {
                archive.issues.append(ZipIssue(code: "zip_path_traversal", severity: .high, member: name, offset: nil,
                                               message: "member name '\(name.terminalSafe)' \(problem); an extracting tool would write "
                                                   + "outside its target directory",
                                               incomplete: false))
            }
            if let first = seen[name] {
                archive.issues.append(ZipIssue(code: "zip_duplicate_member", severity: .high, member: name, offset: nil,
                                               message: "member '\(name.terminalSafe)' appears twice (entries \(first) and \(k)); readers "
                                                   + "disagree on which one they use",
                                               incomplete: false))
            } else { seen[name] = k }
            if n >= 30, local <= UInt64(n - 30), u32(Int(local)) == 0x0403_4B50 {
                let l = Int(local)
                let start = l + 30 + Int(u16(l + 26)) + Int(u16(l + 28))
                entry.dataOffset = start
                entry.inBounds = start <= n && csize <= UInt64(n - start)
                if !entry.inBounds {
                    archive.issues.append(ZipIssue(code: "zip_size_mismatch", severity: .high, member: name, offset: start,
                                                   message: "member '\(name.terminalSafe)' declares \(csize) bytes (\(usize) uncompressed) "
                                                       + "starting at byte \(start), past the end of the \(n)-byte file",
                                                   incomplete: false))
                }
            } else {
                archive.issues.append(ZipIssue(code: "zip_malformed", severity: .high, member: name,
                                               offset: Int(min(local, UInt64(Int.max))),
                                               message: "member '\(name.terminalSafe)' has no local file header at offset \(local)",
                                               incomplete: false))
            }
            if method == 0, csize != usize {
                archive.issues.append(ZipIssue(code: "zip_size_mismatch", severity: .high, member: name, offset: entry.dataOffset,
                                               message: "stored member '\(name.terminalSafe)' declares \(csize) stored bytes but "
                                                   + "\(usize) uncompressed bytes",
                                               incomplete: false))
            }
            archive.entries.append(entry)
        }

        // Overlapping members: one region of the file read as several members (a classic zip bomb).
        let spans = archive.entries.compactMap { e -> (Int, Int, String)? in
            guard let r = e.dataRange else { return nil }
            return (Int(e.localHeaderOffset), r.upperBound, e.name)
        }.sorted { $0.0 < $1.0 }
        var reported = 0
        for j in spans.indices.dropFirst() where spans[j].0 < spans[j - 1].1 && reported < 10 {
            reported += 1
            archive.issues.append(ZipIssue(code: "zip_overlapping_members", severity: .high, member: spans[j].2, offset: spans[j].0,
                                           message: "member '\(spans[j].2.terminalSafe)' overlaps the bytes of "
                                               + "'\(spans[j - 1].2.terminalSafe)'",
                                           incomplete: false))
        }
        return archive
    }

    /// Why a member name could escape an extraction directory, or nil.
    static func unsafeName(_ name: String, raw: UnsafeRawBufferPointer) -> String? {
        if raw.contains(0) { return "contains a NUL byte" }
        if name.hasPrefix("/") || name.hasPrefix("\\") { return "is absolute" }
        let bytes = Array(name.utf8)
        if bytes.count >= 2, bytes[1] == UInt8(ascii: ":"), (bytes[0] | 0x20) >= 0x61, (bytes[0] | 0x20) <= 0x7A {
            return "starts with a drive letter"
        }
        let parts = name.split(whereSeparator: { $0 == "/" || $0 == "\\" })
        if parts.contains("..") { return "contains a '..' component" }
        return nil
    }

    /// CRC-32 (IEEE 802.3, reflected, as ZIP uses).
    public static func crc32(_ b: UnsafeRawBufferPointer) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for x in b { c = crcTable[Int((c ^ UInt32(x)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    static let crcTable: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }
}
