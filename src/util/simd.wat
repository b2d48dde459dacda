;; SIMD kernels for the element-wise float32 loops on the hot paths (src/util/simd.ts).
;; Compiled to src/util/simd-module.ts by `npm run build:simd`; test/util/simd.test.ts checks that
;; the embedded bytes are this file's.
;;
;; Pointers are byte offsets into the imported memory; n counts elements. The element-wise f32x4
;; kernels handle n rounded down to a multiple of 4, the f64x2 ones a multiple of 2: the caller
;; does the tail. (The dense-layer kernels at the end do their own tails.) A single IEEE operation on float32 values gives the same bits in float32 and in float64
;; rounded to float32, so `add` and `div` equal the JavaScript loops bit for bit. The optimizer
;; kernels chain several operations with float64 scalars: they compute in float64 (f64x2), in the
;; JavaScript loops' order, and round to float32 on store, so they equal those loops bit for bit.
(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; dst[i] = dst[i] + src[i]
  (func (export "add") (param $dst i32) (param $src i32) (param $n i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $dst) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
        (v128.store (local.get $dst) (f32x4.add (v128.load (local.get $dst)) (v128.load (local.get $src))))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (local.set $src (i32.add (local.get $src) (i32.const 16)))
        (br $next))))

  ;; a[i] = a[i] / d
  (func (export "div") (param $a i32) (param $d f32) (param $n i32)
    (local $end i32) (local $dv v128)
    (local.set $dv (f32x4.splat (local.get $d)))
    (local.set $end (i32.add (local.get $a) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $a) (local.get $end)))
        (v128.store (local.get $a) (f32x4.div (v128.load (local.get $a)) (local.get $dv)))
        (local.set $a (i32.add (local.get $a) (i32.const 16)))
        (br $next))))

  ;; 1 when no element is NaN or ±Infinity: |x| < Infinity is false for both. The lanes' masks
  ;; are and-ed together (a one-cycle dependency, where a running sum would wait on each add).
  (func (export "finite") (param $a i32) (param $n i32) (result i32)
    (local $end i32) (local $acc v128) (local $inf v128)
    (local.set $inf (f32x4.splat (f32.const inf)))
    (local.set $acc (i32x4.splat (i32.const -1)))
    (local.set $end (i32.add (local.get $a) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $a) (local.get $end)))
        (local.set $acc (v128.and (local.get $acc) (f32x4.lt (f32x4.abs (v128.load (local.get $a))) (local.get $inf))))
        (local.set $a (i32.add (local.get $a) (i32.const 16)))
        (br $next)))
    (i32x4.all_true (local.get $acc)))

  ;; SGD: w[i] = w[i] - a * g[i]
  (func (export "sgd") (param $w i32) (param $g i32) (param $n i32) (param $a f64)
    (local $end i32) (local $av v128)
    (local.set $av (f64x2.splat (local.get $a)))
    (local.set $end (i32.add (local.get $w) (i32.shl (i32.and (local.get $n) (i32.const -2)) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $w) (local.get $end)))
        (v128.store64_lane 0 (local.get $w) (f32x4.demote_f64x2_zero
          (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $w)))
                     (f64x2.mul (local.get $av) (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $g)))))))
        (local.set $w (i32.add (local.get $w) (i32.const 8)))
        (local.set $g (i32.add (local.get $g) (i32.const 8)))
        (br $next))))

  ;; SGD with weight decay: w[i] = w[i] - lr * (scale * g[i] + wd * w[i])
  (func (export "sgdWd") (param $w i32) (param $g i32) (param $n i32) (param $lr f64) (param $scale f64) (param $wd f64)
    (local $end i32) (local $wi v128)
    (local.set $end (i32.add (local.get $w) (i32.shl (i32.and (local.get $n) (i32.const -2)) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $w) (local.get $end)))
        (local.set $wi (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $w))))
        (v128.store64_lane 0 (local.get $w) (f32x4.demote_f64x2_zero
          (f64x2.sub (local.get $wi)
                     (f64x2.mul (f64x2.splat (local.get $lr))
                                (f64x2.add (f64x2.mul (f64x2.splat (local.get $scale)) (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $g))))
                                           (f64x2.mul (f64x2.splat (local.get $wd)) (local.get $wi)))))))
        (local.set $w (i32.add (local.get $w) (i32.const 8)))
        (local.set $g (i32.add (local.get $g) (i32.const 8)))
        (br $next))))

  ;; Heavy-ball momentum, no weight decay: v' = mu v + scale g; v = v'; w = w - lr v' (v' unrounded)
  (func (export "momentum") (param $w i32) (param $v i32) (param $g i32) (param $n i32) (param $mu f64) (param $scale f64) (param $lr f64)
    (local $end i32) (local $vn v128)
    (local.set $end (i32.add (local.get $w) (i32.shl (i32.and (local.get $n) (i32.const -2)) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $w) (local.get $end)))
        (local.set $vn (f64x2.add (f64x2.mul (f64x2.splat (local.get $mu)) (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $v))))
                                  (f64x2.mul (f64x2.splat (local.get $scale)) (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $g))))))
        (v128.store64_lane 0 (local.get $v) (f32x4.demote_f64x2_zero (local.get $vn)))
        (v128.store64_lane 0 (local.get $w) (f32x4.demote_f64x2_zero
          (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $w))) (f64x2.mul (f64x2.splat (local.get $lr)) (local.get $vn)))))
        (local.set $w (i32.add (local.get $w) (i32.const 8)))
        (local.set $v (i32.add (local.get $v) (i32.const 8)))
        (local.set $g (i32.add (local.get $g) (i32.const 8)))
        (br $next))))

  ;; Momentum with weight decay: gi = scale g + wd w; v' = mu v + gi; v = v'; w = w - lr v'
  (func (export "momentumWd") (param $w i32) (param $v i32) (param $g i32) (param $n i32) (param $mu f64) (param $scale f64) (param $lr f64) (param $wd f64)
    (local $end i32) (local $wi v128) (local $vn v128)
    (local.set $end (i32.add (local.get $w) (i32.shl (i32.and (local.get $n) (i32.const -2)) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $w) (local.get $end)))
        (local.set $wi (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $w))))
        (local.set $vn (f64x2.add (f64x2.mul (f64x2.splat (local.get $mu)) (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $v))))
                                  (f64x2.add (f64x2.mul (f64x2.splat (local.get $scale)) (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $g))))
                                             (f64x2.mul (f64x2.splat (local.get $wd)) (local.get $wi)))))
        (v128.store64_lane 0 (local.get $v) (f32x4.demote_f64x2_zero (local.get $vn)))
        (v128.store64_lane 0 (local.get $w) (f32x4.demote_f64x2_zero
          (f64x2.sub (local.get $wi) (f64x2.mul (f64x2.splat (local.get $lr)) (local.get $vn)))))
        (local.set $w (i32.add (local.get $w) (i32.const 8)))
        (local.set $v (i32.add (local.get $v) (i32.const 8)))
        (local.set $g (i32.add (local.get $g) (i32.const 8)))
        (br $next))))

  ;; Adam: gi = scale g + wd w; m' = b1 m + ob1 gi; v' = b2 v + ob2 gi gi;
  ;; w = w - (step m') / (sqrt(v') isc2 + eps), with m', v' unrounded
  (func (export "adam") (param $w i32) (param $m i32) (param $v i32) (param $g i32) (param $n i32)
        (param $scale f64) (param $wd f64) (param $b1 f64) (param $ob1 f64) (param $b2 f64) (param $ob2 f64)
        (param $step f64) (param $isc2 f64) (param $eps f64)
    (local $end i32) (local $wi v128) (local $gi v128) (local $mi v128) (local $vi v128)
    (local.set $end (i32.add (local.get $w) (i32.shl (i32.and (local.get $n) (i32.const -2)) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $w) (local.get $end)))
        (local.set $wi (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $w))))
        (local.set $gi (f64x2.add (f64x2.mul (f64x2.splat (local.get $scale)) (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $g))))
                                  (f64x2.mul (f64x2.splat (local.get $wd)) (local.get $wi))))
        (local.set $mi (f64x2.add (f64x2.mul (f64x2.splat (local.get $b1)) (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $m))))
                                  (f64x2.mul (f64x2.splat (local.get $ob1)) (local.get $gi))))
        (local.set $vi (f64x2.add (f64x2.mul (f64x2.splat (local.get $b2)) (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $v))))
                                  (f64x2.mul (f64x2.mul (f64x2.splat (local.get $ob2)) (local.get $gi)) (local.get $gi))))
        (v128.store64_lane 0 (local.get $m) (f32x4.demote_f64x2_zero (local.get $mi)))
        (v128.store64_lane 0 (local.get $v) (f32x4.demote_f64x2_zero (local.get $vi)))
        (v128.store64_lane 0 (local.get $w) (f32x4.demote_f64x2_zero
          (f64x2.sub (local.get $wi)
                     (f64x2.div (f64x2.mul (f64x2.splat (local.get $step)) (local.get $mi))
                                (f64x2.add (f64x2.mul (f64x2.sqrt (local.get $vi)) (f64x2.splat (local.get $isc2))) (f64x2.splat (local.get $eps)))))))
        (local.set $w (i32.add (local.get $w) (i32.const 8)))
        (local.set $m (i32.add (local.get $m) (i32.const 8)))
        (local.set $v (i32.add (local.get $v) (i32.const 8)))
        (local.set $g (i32.add (local.get $g) (i32.const 8)))
        (br $next))))

  ;; ---- dense layers (src/model/dense-simd.ts) ----------------------------------------------
  ;; A dense layer's work, forward and backward, is sums of scaled rows: y[r, :] is b plus the
  ;; rows of W picked by row r's non-zero inputs, and dW[i, :] is the rows of dz picked by the
  ;; samples whose input i is non-zero. So inputs are kept as lists of their non-zeros (most
  ;; MNIST pixels and, after a ReLU, many activations are 0) and only those rows are summed.
  ;; Sums run in list order, in float32.

  ;; For each of `rows` rows of x [rows, cols]: its non-zero values' column indices and values
  ;; (idx, val: [rows, cols], the first cnt[r] of row r used) and their count cnt[r]. Returns the
  ;; number of non-zeros in all rows.
  (func (export "nzRows") (param $x i32) (param $rows i32) (param $cols i32) (param $idx i32) (param $val i32) (param $cnt i32) (result i32)
    (local $r i32) (local $c i32) (local $k i32) (local $v f32) (local $ip i32) (local $vp i32) (local $total i32)
    (block $rdone
      (loop $rnext
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $ip (i32.add (local.get $idx) (i32.shl (i32.mul (local.get $r) (local.get $cols)) (i32.const 2))))
        (local.set $vp (i32.add (local.get $val) (i32.shl (i32.mul (local.get $r) (local.get $cols)) (i32.const 2))))
        (local.set $k (i32.const 0))
        (local.set $c (i32.const 0))
        (block $cdone
          (loop $cnext
            (br_if $cdone (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $v (f32.load (local.get $x)))
            ;; written at k always, kept only when v is non-zero: no branch
            (i32.store (i32.add (local.get $ip) (i32.shl (local.get $k) (i32.const 2))) (local.get $c))
            (f32.store (i32.add (local.get $vp) (i32.shl (local.get $k) (i32.const 2))) (local.get $v))
            (local.set $k (i32.add (local.get $k) (f32.ne (local.get $v) (f32.const 0))))
            (local.set $x (i32.add (local.get $x) (i32.const 4)))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $cnext)))
        (i32.store (i32.add (local.get $cnt) (i32.shl (local.get $r) (i32.const 2))) (local.get $k))
        (local.set $total (i32.add (local.get $total) (local.get $k)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rnext)))
    (local.get $total))

  ;; out[0..cols) = max(init[0..cols) + sum_k val[k] * m[ix[k], 0..cols), lo) for k < n, where
  ;; m's rows are `stride` bytes apart; init 0: zeros. lo is 0 (a ReLU) or -inf (none).
  ;; 32 columns at a time in eight registers, then 4, then one.
  (func $lincomb (param $ix i32) (param $val i32) (param $n i32) (param $m i32) (param $stride i32)
        (param $init i32) (param $out i32) (param $cols i32) (param $lof f32)
    (local $c i32) (local $k i32) (local $p i32) (local $q i32) (local $v v128) (local $lo v128) (local $s f32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128) (local $a4 v128) (local $a5 v128) (local $a6 v128) (local $a7 v128)
    (local.set $lo (f32x4.splat (local.get $lof)))
    (block $c32done
      (loop $c32next
        (br_if $c32done (i32.gt_u (i32.add (local.get $c) (i32.const 32)) (local.get $cols)))
        (if (local.get $init)
          (then
            (local.set $q (i32.add (local.get $init) (i32.shl (local.get $c) (i32.const 2))))
        (local.set $a0 (v128.load offset=0 (local.get $q)))
        (local.set $a1 (v128.load offset=16 (local.get $q)))
        (local.set $a2 (v128.load offset=32 (local.get $q)))
        (local.set $a3 (v128.load offset=48 (local.get $q)))
        (local.set $a4 (v128.load offset=64 (local.get $q)))
        (local.set $a5 (v128.load offset=80 (local.get $q)))
        (local.set $a6 (v128.load offset=96 (local.get $q)))
        (local.set $a7 (v128.load offset=112 (local.get $q))))
          (else
            (local.set $a0 (v128.const i64x2 0 0)) (local.set $a1 (v128.const i64x2 0 0)) (local.set $a2 (v128.const i64x2 0 0)) (local.set $a3 (v128.const i64x2 0 0)) (local.set $a4 (v128.const i64x2 0 0)) (local.set $a5 (v128.const i64x2 0 0)) (local.set $a6 (v128.const i64x2 0 0)) (local.set $a7 (v128.const i64x2 0 0))))
        (local.set $k (i32.const 0))
        (block $kdone
          (loop $knext
            (br_if $kdone (i32.ge_u (local.get $k) (local.get $n)))
            (local.set $p (i32.add (i32.add (local.get $m) (i32.shl (local.get $c) (i32.const 2)))
                                   (i32.mul (i32.load (i32.add (local.get $ix) (i32.shl (local.get $k) (i32.const 2)))) (local.get $stride))))
            (local.set $v (v128.load32_splat (i32.add (local.get $val) (i32.shl (local.get $k) (i32.const 2)))))
            (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (local.get $v) (v128.load offset=0 (local.get $p)))))
            (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (local.get $v) (v128.load offset=16 (local.get $p)))))
            (local.set $a2 (f32x4.add (local.get $a2) (f32x4.mul (local.get $v) (v128.load offset=32 (local.get $p)))))
            (local.set $a3 (f32x4.add (local.get $a3) (f32x4.mul (local.get $v) (v128.load offset=48 (local.get $p)))))
            (local.set $a4 (f32x4.add (local.get $a4) (f32x4.mul (local.get $v) (v128.load offset=64 (local.get $p)))))
            (local.set $a5 (f32x4.add (local.get $a5) (f32x4.mul (local.get $v) (v128.load offset=80 (local.get $p)))))
            (local.set $a6 (f32x4.add (local.get $a6) (f32x4.mul (local.get $v) (v128.load offset=96 (local.get $p)))))
            (local.set $a7 (f32x4.add (local.get $a7) (f32x4.mul (local.get $v) (v128.load offset=112 (local.get $p)))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $knext)))
        (local.set $q (i32.add (local.get $out) (i32.shl (local.get $c) (i32.const 2))))
        (v128.store offset=0 (local.get $q) (f32x4.max (local.get $a0) (local.get $lo)))
        (v128.store offset=16 (local.get $q) (f32x4.max (local.get $a1) (local.get $lo)))
        (v128.store offset=32 (local.get $q) (f32x4.max (local.get $a2) (local.get $lo)))
        (v128.store offset=48 (local.get $q) (f32x4.max (local.get $a3) (local.get $lo)))
        (v128.store offset=64 (local.get $q) (f32x4.max (local.get $a4) (local.get $lo)))
        (v128.store offset=80 (local.get $q) (f32x4.max (local.get $a5) (local.get $lo)))
        (v128.store offset=96 (local.get $q) (f32x4.max (local.get $a6) (local.get $lo)))
        (v128.store offset=112 (local.get $q) (f32x4.max (local.get $a7) (local.get $lo)))
        (local.set $c (i32.add (local.get $c) (i32.const 32)))
        (br $c32next)))
    (block $c4done
      (loop $c4next
        (br_if $c4done (i32.gt_u (i32.add (local.get $c) (i32.const 4)) (local.get $cols)))
        (local.set $a0 (if (result v128) (local.get $init)
          (then (v128.load (i32.add (local.get $init) (i32.shl (local.get $c) (i32.const 2)))))
          (else (v128.const i64x2 0 0))))
        (local.set $k (i32.const 0))
        (block $kdone
          (loop $knext
            (br_if $kdone (i32.ge_u (local.get $k) (local.get $n)))
            (local.set $p (i32.add (i32.add (local.get $m) (i32.shl (local.get $c) (i32.const 2)))
                                   (i32.mul (i32.load (i32.add (local.get $ix) (i32.shl (local.get $k) (i32.const 2)))) (local.get $stride))))
            (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load32_splat (i32.add (local.get $val) (i32.shl (local.get $k) (i32.const 2))))
                                                                 (v128.load (local.get $p)))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $knext)))
        (v128.store (i32.add (local.get $out) (i32.shl (local.get $c) (i32.const 2))) (f32x4.max (local.get $a0) (local.get $lo)))
        (local.set $c (i32.add (local.get $c) (i32.const 4)))
        (br $c4next)))
    (block $c1done
      (loop $c1next
        (br_if $c1done (i32.ge_u (local.get $c) (local.get $cols)))
        (local.set $s (if (result f32) (local.get $init)
          (then (f32.load (i32.add (local.get $init) (i32.shl (local.get $c) (i32.const 2)))))
          (else (f32.const 0))))
        (local.set $k (i32.const 0))
        (block $kdone
          (loop $knext
            (br_if $kdone (i32.ge_u (local.get $k) (local.get $n)))
            (local.set $p (i32.add (i32.add (local.get $m) (i32.shl (local.get $c) (i32.const 2)))
                                   (i32.mul (i32.load (i32.add (local.get $ix) (i32.shl (local.get $k) (i32.const 2)))) (local.get $stride))))
            (local.set $s (f32.add (local.get $s) (f32.mul (f32.load (i32.add (local.get $val) (i32.shl (local.get $k) (i32.const 2))))
                                                           (f32.load (local.get $p)))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $knext)))
        (f32.store (i32.add (local.get $out) (i32.shl (local.get $c) (i32.const 2))) (f32.max (local.get $s) (local.get $lof)))
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (br $c1next))))

  ;; Forward: y[r, :] = act(b + x[r, :] w) for r < rows, x given by nzRows' lists (inCols wide),
  ;; w [inCols, outCols] row-major, act a ReLU when relu is 1.
  (func (export "denseFwd") (param $idx i32) (param $val i32) (param $cnt i32) (param $rows i32) (param $inCols i32)
        (param $w i32) (param $b i32) (param $y i32) (param $outCols i32) (param $relu i32)
    (local $r i32) (local $off i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $off (i32.shl (i32.mul (local.get $r) (local.get $inCols)) (i32.const 2)))
        (call $lincomb (i32.add (local.get $idx) (local.get $off)) (i32.add (local.get $val) (local.get $off))
                       (i32.load (i32.add (local.get $cnt) (i32.shl (local.get $r) (i32.const 2))))
                       (local.get $w) (i32.shl (local.get $outCols) (i32.const 2)) (local.get $b)
                       (i32.add (local.get $y) (i32.shl (i32.mul (local.get $r) (local.get $outCols)) (i32.const 2)))
                       (local.get $outCols)
                       (select (f32.const 0) (f32.const -inf) (local.get $relu)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $next))))

  ;; The lists of nzRows by column: for column c < cols, its rows (ascending) and values are
  ;; rIdx/cVal[colPtr[c] .. colPtr[c+1]). colPtr holds cols + 1 entries.
  (func (export "byColumn") (param $idx i32) (param $val i32) (param $cnt i32) (param $rows i32) (param $cols i32)
        (param $colPtr i32) (param $rIdx i32) (param $cVal i32)
    (local $r i32) (local $k i32) (local $n i32) (local $ip i32) (local $vp i32) (local $cp i32) (local $pos i32) (local $c i32) (local $sum i32) (local $t i32)
    (memory.fill (local.get $colPtr) (i32.const 0) (i32.shl (i32.add (local.get $cols) (i32.const 1)) (i32.const 2)))
    ;; counts, then starts (exclusive prefix sums)
    (local.set $r (i32.const 0))
    (block $rdone
      (loop $rnext
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $ip (i32.add (local.get $idx) (i32.shl (i32.mul (local.get $r) (local.get $cols)) (i32.const 2))))
        (local.set $n (i32.load (i32.add (local.get $cnt) (i32.shl (local.get $r) (i32.const 2)))))
        (local.set $k (i32.const 0))
        (block $kdone
          (loop $knext
            (br_if $kdone (i32.ge_u (local.get $k) (local.get $n)))
            (local.set $cp (i32.add (local.get $colPtr) (i32.shl (i32.load (i32.add (local.get $ip) (i32.shl (local.get $k) (i32.const 2)))) (i32.const 2))))
            (i32.store (local.get $cp) (i32.add (i32.load (local.get $cp)) (i32.const 1)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $knext)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rnext)))
    (block $cdone
      (loop $cnext
        (br_if $cdone (i32.gt_u (local.get $c) (local.get $cols)))
        (local.set $cp (i32.add (local.get $colPtr) (i32.shl (local.get $c) (i32.const 2))))
        (local.set $t (i32.load (local.get $cp)))
        (i32.store (local.get $cp) (local.get $sum))
        (local.set $sum (i32.add (local.get $sum) (local.get $t)))
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (br $cnext)))
    ;; fill: colPtr[c] moves from c's start to its end, which is c + 1's start
    (local.set $r (i32.const 0))
    (block $rdone
      (loop $rnext
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $ip (i32.add (local.get $idx) (i32.shl (i32.mul (local.get $r) (local.get $cols)) (i32.const 2))))
        (local.set $vp (i32.add (local.get $val) (i32.shl (i32.mul (local.get $r) (local.get $cols)) (i32.const 2))))
        (local.set $n (i32.load (i32.add (local.get $cnt) (i32.shl (local.get $r) (i32.const 2)))))
        (local.set $k (i32.const 0))
        (block $kdone
          (loop $knext
            (br_if $kdone (i32.ge_u (local.get $k) (local.get $n)))
            (local.set $cp (i32.add (local.get $colPtr) (i32.shl (i32.load (i32.add (local.get $ip) (i32.shl (local.get $k) (i32.const 2)))) (i32.const 2))))
            (local.set $pos (i32.shl (i32.load (local.get $cp)) (i32.const 2)))
            (i32.store (i32.add (local.get $rIdx) (local.get $pos)) (local.get $r))
            (f32.store (i32.add (local.get $cVal) (local.get $pos)) (f32.load (i32.add (local.get $vp) (i32.shl (local.get $k) (i32.const 2)))))
            (i32.store (local.get $cp) (i32.add (i32.load (local.get $cp)) (i32.const 1)))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $knext)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rnext)))
    ;; colPtr[c] now holds c's end: shift by one, colPtr[0] = 0
    (local.set $c (local.get $cols))
    (block $sdone
      (loop $snext
        (br_if $sdone (i32.eqz (local.get $c)))
        (local.set $cp (i32.add (local.get $colPtr) (i32.shl (local.get $c) (i32.const 2))))
        (i32.store (local.get $cp) (i32.load (i32.sub (local.get $cp) (i32.const 4))))
        (local.set $c (i32.sub (local.get $c) (i32.const 1)))
        (br $snext)))
    (i32.store (local.get $colPtr) (i32.const 0)))

  ;; Weight gradient: dw[i, :] = sum over the rows r of input column i of x[r, i] dz[r, :], for
  ;; i < inCols (byColumn's lists; a column with no non-zero gets zeros), dz [rows, outCols].
  (func (export "denseDw") (param $colPtr i32) (param $rIdx i32) (param $cVal i32) (param $inCols i32)
        (param $dz i32) (param $outCols i32) (param $dw i32)
    (local $i i32) (local $s i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $inCols)))
        (local.set $s (i32.load (i32.add (local.get $colPtr) (i32.shl (local.get $i) (i32.const 2)))))
        (call $lincomb (i32.add (local.get $rIdx) (i32.shl (local.get $s) (i32.const 2)))
                       (i32.add (local.get $cVal) (i32.shl (local.get $s) (i32.const 2)))
                       (i32.sub (i32.load (i32.add (local.get $colPtr) (i32.shl (i32.add (local.get $i) (i32.const 1)) (i32.const 2)))) (local.get $s))
                       (local.get $dz) (i32.shl (local.get $outCols) (i32.const 2)) (i32.const 0)
                       (i32.add (local.get $dw) (i32.shl (i32.mul (local.get $i) (local.get $outCols)) (i32.const 2)))
                       (local.get $outCols) (f32.const -inf))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))

  ;; out[c] = sum over r < rows of m[r, c] (m [rows, cols]), rows in order
  (func (export "colSum") (param $m i32) (param $rows i32) (param $cols i32) (param $out i32)
    (local $c i32) (local $r i32) (local $p i32) (local $a v128) (local $s f32) (local $stride i32)
    (local.set $stride (i32.shl (local.get $cols) (i32.const 2)))
    (block $c4done
      (loop $c4next
        (br_if $c4done (i32.gt_u (i32.add (local.get $c) (i32.const 4)) (local.get $cols)))
        (local.set $a (v128.const i64x2 0 0))
        (local.set $p (i32.add (local.get $m) (i32.shl (local.get $c) (i32.const 2))))
        (local.set $r (i32.const 0))
        (block $rdone
          (loop $rnext
            (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $a (f32x4.add (local.get $a) (v128.load (local.get $p))))
            (local.set $p (i32.add (local.get $p) (local.get $stride)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rnext)))
        (v128.store (i32.add (local.get $out) (i32.shl (local.get $c) (i32.const 2))) (local.get $a))
        (local.set $c (i32.add (local.get $c) (i32.const 4)))
        (br $c4next)))
    (block $c1done
      (loop $c1next
        (br_if $c1done (i32.ge_u (local.get $c) (local.get $cols)))
        (local.set $s (f32.const 0))
        (local.set $p (i32.add (local.get $m) (i32.shl (local.get $c) (i32.const 2))))
        (local.set $r (i32.const 0))
        (block $rdone
          (loop $rnext
            (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $s (f32.add (local.get $s) (f32.load (local.get $p))))
            (local.set $p (i32.add (local.get $p) (local.get $stride)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rnext)))
        (f32.store (i32.add (local.get $out) (i32.shl (local.get $c) (i32.const 2))) (local.get $s))
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (br $c1next))))

  ;; Input gradient through the ReLU before this layer: dx[r, i] = dot(w[i, :], dz[r, :]) where
  ;; input i of row r is non-zero (nzRows' lists of the layer's input, which is a ReLU's output),
  ;; else 0. w [inCols, outCols], dz [rows, outCols], dx [rows, inCols].
  (func (export "denseDx") (param $idx i32) (param $cnt i32) (param $rows i32) (param $inCols i32)
        (param $w i32) (param $dz i32) (param $outCols i32) (param $dx i32)
    (local $r i32) (local $k i32) (local $n i32) (local $ip i32) (local $i i32) (local $p i32) (local $q i32) (local $c i32)
    (local $a0 v128) (local $a1 v128) (local $s f32) (local $dzr i32) (local $dxr i32) (local $stride i32)
    (local.set $stride (i32.shl (local.get $outCols) (i32.const 2)))
    (block $rdone
      (loop $rnext
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $dxr (i32.add (local.get $dx) (i32.shl (i32.mul (local.get $r) (local.get $inCols)) (i32.const 2))))
        (local.set $dzr (i32.add (local.get $dz) (i32.mul (local.get $r) (local.get $stride))))
        (memory.fill (local.get $dxr) (i32.const 0) (i32.shl (local.get $inCols) (i32.const 2)))
        (local.set $ip (i32.add (local.get $idx) (i32.shl (i32.mul (local.get $r) (local.get $inCols)) (i32.const 2))))
        (local.set $n (i32.load (i32.add (local.get $cnt) (i32.shl (local.get $r) (i32.const 2)))))
        (local.set $k (i32.const 0))
        (block $kdone
          (loop $knext
            (br_if $kdone (i32.ge_u (local.get $k) (local.get $n)))
            (local.set $i (i32.load (i32.add (local.get $ip) (i32.shl (local.get $k) (i32.const 2)))))
            (local.set $p (i32.add (local.get $w) (i32.mul (local.get $i) (local.get $stride))))
            (local.set $q (local.get $dzr))
            (local.set $a0 (v128.const i64x2 0 0))
            (local.set $a1 (v128.const i64x2 0 0))
            (local.set $c (i32.const 0))
            (block $c8done
              (loop $c8next
                (br_if $c8done (i32.gt_u (i32.add (local.get $c) (i32.const 8)) (local.get $outCols)))
                (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load (local.get $p)) (v128.load (local.get $q)))))
                (local.set $a1 (f32x4.add (local.get $a1) (f32x4.mul (v128.load offset=16 (local.get $p)) (v128.load offset=16 (local.get $q)))))
                (local.set $p (i32.add (local.get $p) (i32.const 32)))
                (local.set $q (i32.add (local.get $q) (i32.const 32)))
                (local.set $c (i32.add (local.get $c) (i32.const 8)))
                (br $c8next)))
            (if (i32.le_u (i32.add (local.get $c) (i32.const 4)) (local.get $outCols))
              (then
                (local.set $a0 (f32x4.add (local.get $a0) (f32x4.mul (v128.load (local.get $p)) (v128.load (local.get $q)))))
                (local.set $p (i32.add (local.get $p) (i32.const 16)))
                (local.set $q (i32.add (local.get $q) (i32.const 16)))
                (local.set $c (i32.add (local.get $c) (i32.const 4)))))
            (local.set $a0 (f32x4.add (local.get $a0) (local.get $a1)))
            (local.set $s (f32.add (f32.add (f32x4.extract_lane 0 (local.get $a0)) (f32x4.extract_lane 1 (local.get $a0)))
                                   (f32.add (f32x4.extract_lane 2 (local.get $a0)) (f32x4.extract_lane 3 (local.get $a0)))))
            (block $c1done
              (loop $c1next
                (br_if $c1done (i32.ge_u (local.get $c) (local.get $outCols)))
                (local.set $s (f32.add (local.get $s) (f32.mul (f32.load (local.get $p)) (f32.load (local.get $q)))))
                (local.set $p (i32.add (local.get $p) (i32.const 4)))
                (local.set $q (i32.add (local.get $q) (i32.const 4)))
                (local.set $c (i32.add (local.get $c) (i32.const 1)))
                (br $c1next)))
            (f32.store (i32.add (local.get $dxr) (i32.shl (local.get $i) (i32.const 2))) (local.get $s))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $knext)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rnext))))
)
