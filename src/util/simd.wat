;; SIMD kernels for the element-wise float32 loops on the hot paths (src/util/simd.ts).
;; Compiled to src/util/simd-module.ts by `npm run build:simd`; test/util/simd.test.ts checks that
;; the embedded bytes are this file's.
;;
;; Pointers are byte offsets into the imported memory; n counts elements. The f32x4 kernels
;; handle n rounded down to a multiple of 4, the f64x2 ones a multiple of 2: the caller does the
;; tail. A single IEEE operation on float32 values gives the same bits in float32 and in float64
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
)
