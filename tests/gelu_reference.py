"""Independent mpmath references for the GELU closed forms (numerical quadrature).

None of the closed forms of meanfield.core.gaussian.closed are used here.  The 2-D
expectations are reduced to 1-D quadrature over z1 using the standard
conditional expectations of v | z1 ~ N(m, sig2):
    E[v Phi(v)]              = m Phi(m/t) + sig2 phi(m/t)/t,   t = sqrt(1+sig2)
    E[Phi(v) + v phi(v)]     = Phi(m/t) + m phi(m/t)/t^3
(both follow from E[Phi(v)] = Phi(m/t) and Stein's lemma), and optionally
by a fully numerical 2-D quadrature (`*_2d`).
"""
import mpmath as mp

DPS = 50


def _g(x):
    return x * mp.ncdf(x)


def _gp(x):
    return mp.ncdf(x) + x * mp.npdf(x)


def _quad_z(f):
    # integrate f(z) phi(z) over R, split at 0 (kinks of Phi(sqrt(q) z))
    h = lambda z: f(z) * mp.npdf(z)
    return mp.quad(h, [-mp.inf, -1, 0, 1, mp.inf])


def one_point_ref(q, dps=DPS):
    with mp.workdps(dps):
        q = mp.mpf(q)
        sq = mp.sqrt(q)
        out = {}
        out["phi"] = _quad_z(lambda z: _g(sq * z))
        out["phi2"] = _quad_z(lambda z: _g(sq * z) ** 2)
        out["phi2z"] = _quad_z(lambda z: _g(sq * z) ** 2 * (z * z - 1))
        out["dphi2"] = _quad_z(lambda z: _gp(sq * z) ** 2)
        out["dphi"] = _quad_z(lambda z: _gp(sq * z))
        out["phi2h4"] = _quad_z(lambda z: _g(sq * z) ** 2 * (z ** 4 - 6 * z * z + 3))
        out["dphi2z"] = _quad_z(lambda z: _gp(sq * z) ** 2 * (z * z - 1))
        return {k: float(v) for k, v in out.items()}, out


def _cond(a, b, c, w):
    """Return sqrt(a), slope k (m = k z1) and conditional variance sig2."""
    sa = mp.sqrt(a)
    k = c / sa
    sig2 = w / a
    return sa, k, sig2


def general_ref_mp(s11, s22, s12, w=None, dps=DPS):
    """(D, Dp) as mpf.  Inputs are taken as exact binary values; w = det
    may be given explicitly (exact) for near-singular cases."""
    with mp.workdps(dps):
        a, b, c = mp.mpf(s11), mp.mpf(s22), mp.mpf(s12)
        if w is None:
            w = a * b - c * c
        w = mp.mpf(w)
        if w < 0:
            w = mp.mpf(0)
        if a == 0 or b == 0:
            # one of the variables is identically 0: gelu(0)=0, gelu'(0)=1/2
            return mp.mpf(0), mp.mpf(1) / 4
        sa, k, sig2 = _cond(a, b, c, w)
        t = mp.sqrt(1 + sig2)

        def fD(z):
            m = k * z
            return _g(sa * z) * (m * mp.ncdf(m / t) + sig2 * mp.npdf(m / t) / t)

        def fDp(z):
            m = k * z
            return _gp(sa * z) * (mp.ncdf(m / t) + m * mp.npdf(m / t) / t ** 3)

        return _quad_z(fD), _quad_z(fDp)


def general_ref(s11, s22, s12, w=None, dps=DPS):
    D, Dp = general_ref_mp(s11, s22, s12, w, dps)
    return float(D), float(Dp)


def equal_variance_ref(q, eps, dps=60):
    """(D, Delta, Dp) for s11=s22=q, s12=q(1-eps) with eps exact."""
    with mp.workdps(dps):
        q = mp.mpf(q)
        e = mp.mpf(eps)
        c = q * (1 - e)
        w = q * q * e * (2 - e)
        D, Dp = general_ref_mp(q, q, c, w, dps)
        sq = mp.sqrt(q)
        F = _quad_z(lambda z: _g(sq * z) ** 2)
        return float(D), float(F - D), float(Dp)


def general_ref_2d(s11, s22, s12, dps=20):
    """Fully numerical 2-D quadrature (slow; used for a few live checks)."""
    with mp.workdps(dps):
        a, b, c = mp.mpf(s11), mp.mpf(s22), mp.mpf(s12)
        sa = mp.sqrt(a)
        k = c / sa
        sg = mp.sqrt(max(b - c * c / a, 0))
        pts = [-mp.inf, 0, mp.inf]
        D = mp.quad(lambda z1, z2: _g(sa * z1) * _g(k * z1 + sg * z2)
                    * mp.npdf(z1) * mp.npdf(z2), pts, pts)
        Dp = mp.quad(lambda z1, z2: _gp(sa * z1) * _gp(k * z1 + sg * z2)
                     * mp.npdf(z1) * mp.npdf(z2), pts, pts)
        return float(D), float(Dp)
