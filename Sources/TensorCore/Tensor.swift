import Foundation

/// Errors from tensor operations. Shape errors are programming errors in the caller far more
/// often than bad input, but models bind user-supplied weights, so they are thrown, not trapped.
public enum TensorError: Error, Equatable, CustomStringConvertible, Sendable {
    case shapeMismatch(op: String, expected: String, got: String)
    case invalidShape(op: String, shape: [Int], reason: String)
    case lapackFailure(routine: String, info: Int)
    case tooLarge(op: String, elements: Int)

    public var description: String {
        switch self {
        case let .shapeMismatch(op, expected, got):
            return "\(op): shape mismatch, expected \(expected), got \(got)"
        case let .invalidShape(op, shape, reason):
            return "\(op): invalid shape \(shape): \(reason)"
        case let .lapackFailure(routine, info):
            return "\(routine) failed with info=\(info)"
        case let .tooLarge(op, elements):
            return "\(op): \(elements) elements is more than this process will allocate"
        }
    }
}

/// A reference-counted, 64-byte aligned block of Float32 shared by a tensor and its views.
/// Tensors copy it on write when it is shared (value semantics, like swift-collections' COW).
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int) {
        precondition(count >= 0, "negative storage size")
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride,
                                                   alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}

/// A Float32 tensor: shape, strides and an offset into shared storage. Row-major when created;
/// views (transpose, permute, slice) share storage and never copy. Compute ops take contiguous
/// inputs and call `contiguous()` themselves, which is free for a tensor that already is.
public struct Tensor: Sendable, CustomStringConvertible {
    public private(set) var storage: TensorStorage
    public private(set) var offset: Int
    public private(set) var shape: [Int]
    public private(set) var strides: [Int]

    /// Upper bound on one tensor's element count (16 GiB of Float32). Nothing Assay loads comes
    /// near it; a larger request comes from a corrupt header or config and must not be attempted.
    public static let maxElements = 1 << 32

    // MARK: creation

    public init(zeros shape: [Int]) {
        self.init(shape: shape, repeating: 0)
    }

    public init(shape: [Int], repeating value: Float) {
        let n = Tensor.checkedCount(shape)
        storage = TensorStorage(count: n)
        storage.pointer.initialize(repeating: value, count: max(n, 1))
        offset = 0
        self.shape = shape
        strides = Tensor.rowMajorStrides(shape)
    }

    public init(shape: [Int], data: [Float]) {
        let n = Tensor.checkedCount(shape)
        precondition(n == data.count, "Tensor(shape: \(shape)) needs \(n) values, got \(data.count)")
        let st = TensorStorage(count: n)
        data.withUnsafeBufferPointer { src in
            if n > 0 { st.pointer.initialize(from: src.baseAddress!, count: n) }
        }
        storage = st
        offset = 0
        self.shape = shape
        strides = Tensor.rowMajorStrides(shape)
    }

    /// A tensor whose contents the caller writes through `fill` (no zeroing pass).
    public init(shape: [Int], uninitializedWith fill: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        let n = Tensor.checkedCount(shape)
        storage = TensorStorage(count: n)
        offset = 0
        self.shape = shape
        strides = Tensor.rowMajorStrides(shape)
        try fill(UnsafeMutableBufferPointer(start: storage.pointer, count: n))
    }

    public init(scalar: Float) { self.init(shape: [], data: [scalar]) }

    init(storage: TensorStorage, offset: Int, shape: [Int], strides: [Int]) {
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.strides = strides
    }

    static func checkedCount(_ shape: [Int]) -> Int {
        var n = 1
        for d in shape {
            precondition(d >= 0, "negative dimension in shape \(shape)")
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            precondition(!overflow && p <= maxElements, "shape \(shape) is too large")
            n = p
        }
        return n
    }

    public static func rowMajorStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var s = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i] = s
            s *= max(shape[i], 1)
        }
        return strides
    }

    // MARK: properties

    public var rank: Int { shape.count }
    public var count: Int { shape.reduce(1, *) }

    public var isContiguous: Bool {
        var expected = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) where shape[i] != 1 {
            if strides[i] != expected { return false }
            expected *= shape[i]
        }
        return true
    }

    public var description: String {
        let values = array
        let head = values.prefix(8).map { String(format: "%.5g", $0) }.joined(separator: ", ")
        return "Tensor(\(shape), [\(head)\(values.count > 8 ? ", …" : "")])"
    }

    /// The elements in row-major order (a copy).
    public var array: [Float] {
        let c = contiguous()
        return Array(UnsafeBufferPointer(start: c.storage.pointer + c.offset, count: c.count))
    }

    public subscript(_ indices: Int...) -> Float {
        get {
            precondition(indices.count == shape.count, "subscript rank \(indices.count) for shape \(shape)")
            var o = offset
            for (i, idx) in indices.enumerated() {
                precondition(idx >= 0 && idx < shape[i], "index \(indices) out of range for shape \(shape)")
                o += idx * strides[i]
            }
            return storage.pointer[o]
        }
        set {
            precondition(indices.count == shape.count, "subscript rank \(indices.count) for shape \(shape)")
            makeUnique()
            var o = offset
            for (i, idx) in indices.enumerated() {
                precondition(idx >= 0 && idx < shape[i], "index \(indices) out of range for shape \(shape)")
                o += idx * strides[i]
            }
            storage.pointer[o] = newValue
        }
    }

    // MARK: buffer access

    /// Row-major contiguous elements. Copies only when this tensor is a non-contiguous view.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        let c = contiguous()
        return try withExtendedLifetime(c.storage) {
            try body(UnsafeBufferPointer(start: c.storage.pointer + c.offset, count: c.count))
        }
    }

    /// Mutable row-major elements; copies first if the storage is shared or the tensor is a view.
    public mutating func withUnsafeMutableBufferPointer<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        makeUnique()
        return try body(UnsafeMutableBufferPointer(start: storage.pointer + offset, count: count))
    }

    /// Ensures this tensor owns contiguous storage nobody else references.
    public mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) || !isContiguous {
            self = materialized()
        }
    }

    // MARK: views and copies

    /// This tensor if already contiguous, else a row-major copy.
    public func contiguous() -> Tensor {
        isContiguous ? self : materialized()
    }

    /// A fresh row-major copy with its own storage.
    public func materialized() -> Tensor {
        let n = count
        let out = TensorStorage(count: n)
        if isContiguous {
            if n > 0 { out.pointer.initialize(from: storage.pointer + offset, count: n) }
        } else {
            var dst = 0
            copyStrided(dim: 0, srcOffset: offset, dst: out.pointer, dstIndex: &dst)
        }
        return Tensor(storage: out, offset: 0, shape: shape, strides: Tensor.rowMajorStrides(shape))
    }

    private func copyStrided(dim: Int, srcOffset: Int, dst: UnsafeMutablePointer<Float>, dstIndex: inout Int) {
        if dim == shape.count - 1 {
            let s = strides[dim]
            let src = storage.pointer + srcOffset
            for i in 0..<shape[dim] { dst[dstIndex + i] = src[i * s] }
            dstIndex += shape[dim]
            return
        }
        if shape.isEmpty { dst[0] = storage.pointer[srcOffset]; dstIndex += 1; return }
        for i in 0..<shape[dim] {
            copyStrided(dim: dim + 1, srcOffset: srcOffset + i * strides[dim], dst: dst, dstIndex: &dstIndex)
        }
    }

    /// Same elements, new shape (one dimension may be -1). A view when contiguous.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var dims = newShape
        let n = count
        if let infer = dims.firstIndex(of: -1) {
            let known = dims.enumerated().filter { $0.offset != infer }.reduce(1) { $0 * $1.element }
            precondition(known > 0 && n % known == 0, "cannot reshape \(shape) to \(newShape)")
            dims[infer] = n / known
        }
        precondition(dims.reduce(1, *) == n, "cannot reshape \(shape) (\(n) elements) to \(newShape)")
        let c = contiguous()
        return Tensor(storage: c.storage, offset: c.offset, shape: dims, strides: Tensor.rowMajorStrides(dims))
    }

    /// A view with axes reordered: `permuted([1, 0])` is the transpose of a matrix.
    public func permuted(_ axes: [Int]) -> Tensor {
        precondition(axes.sorted() == Array(0..<rank), "permutation \(axes) for rank \(rank)")
        return Tensor(storage: storage, offset: offset, shape: axes.map { shape[$0] }, strides: axes.map { strides[$0] })
    }

    /// The transpose of a matrix, as a view.
    public var transposed: Tensor {
        precondition(rank == 2, "transposed needs a matrix, got shape \(shape)")
        return permuted([1, 0])
    }

    /// A view of `range` along `axis`.
    public func slice(axis: Int, _ range: Range<Int>) -> Tensor {
        precondition(axis >= 0 && axis < rank && range.lowerBound >= 0 && range.upperBound <= shape[axis],
                     "slice \(range) of axis \(axis) out of range for shape \(shape)")
        var s = shape
        s[axis] = range.count
        return Tensor(storage: storage, offset: offset + range.lowerBound * strides[axis], shape: s, strides: strides)
    }

    /// Index `i` along the first axis, dropping that axis (a view).
    public func row(_ i: Int) -> Tensor {
        precondition(rank >= 1 && i >= 0 && i < shape[0], "row \(i) out of range for shape \(shape)")
        return Tensor(storage: storage, offset: offset + i * strides[0],
                      shape: Array(shape.dropFirst()), strides: Array(strides.dropFirst()))
    }

    /// Rows of a 2-D table selected by index (embedding lookup): (V, d) gathered by ids → (n, d).
    public func gatherRows(_ ids: [Int]) -> Tensor {
        precondition(rank == 2, "gatherRows needs a matrix, got \(shape)")
        let d = shape[1]
        let src = contiguous()
        return Tensor(shape: [ids.count, d]) { dst in
            for (r, id) in ids.enumerated() {
                precondition(id >= 0 && id < src.shape[0], "row id \(id) out of range 0..<\(src.shape[0])")
                (dst.baseAddress! + r * d).update(from: src.storage.pointer + src.offset + id * d, count: d)
            }
        }
    }

    /// Concatenation along `axis` (copies).
    public static func concatenate(_ tensors: [Tensor], axis: Int) -> Tensor {
        precondition(!tensors.isEmpty, "concatenate of nothing")
        var shape = tensors[0].shape
        for t in tensors.dropFirst() {
            precondition(t.rank == shape.count, "concatenate rank mismatch")
            for i in 0..<shape.count where i != axis { precondition(t.shape[i] == shape[i], "concatenate shape mismatch") }
        }
        shape[axis] = tensors.reduce(0) { $0 + $1.shape[axis] }
        let outer = shape[..<axis].reduce(1, *)
        let parts = tensors.map { $0.contiguous() }
        let inner = parts.map { $0.count / max(outer, 1) }
        return Tensor(shape: shape) { dst in
            var o = 0
            for i in 0..<outer {
                for (p, t) in parts.enumerated() where inner[p] > 0 {
                    (dst.baseAddress! + o).update(from: t.storage.pointer + t.offset + i * inner[p], count: inner[p])
                    o += inner[p]
                }
            }
        }
    }
}

extension Tensor: Equatable {
    /// Equal shapes and bitwise-equal elements.
    public static func == (a: Tensor, b: Tensor) -> Bool {
        a.shape == b.shape && a.array.withUnsafeBytes { x in b.array.withUnsafeBytes { y in x.elementsEqual(y) } }
    }
}
