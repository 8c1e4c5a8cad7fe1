package monitor

import (
	"context"

	"github.com/rimon-dev/rimon/policy"
)

func (m *Monitor) reload(ctx context.Context) {
	p, err := m.cfg.Reload()
	if err != nil {
		m.errors++
		m.log.Error("policy reload rejected; keeping the old policy", "err", err)
		return
	}
	if p.PCR != m.pol.PCR || p.Log != m.pol.Log || !sameBanks(p, m.pol) {
		m.errors++
		m.log.Error("policy reload rejected; keeping the old policy: pcr, banks and log can change only with a restart",
			"source", p.Source)
		return
	}
	m.pol = p
	// A change waiting for its debounce stays pending when the new policy
	// still covers its path the same way: a reload must not lose it.
	for k, pd := range m.pending {
		if t, ok := p.TargetFor(k.path); !ok || t.Kind != k.kind || t.Path != k.path {
			pd.timer.Stop()
			delete(m.pending, k)
		}
	}
	m.installWatches()
	m.log.Info("policy reloaded", "source", p.Source, "rules", len(p.Rules))
	m.startRescan(ctx, "reload")
}

func sameBanks(a, b *policy.Policy) bool {
	if len(a.Banks) != len(b.Banks) {
		return false
	}
	for i := range a.Banks {
		if a.Banks[i] != b.Banks[i] {
			return false
		}
	}
	return true
}
