package ingest

// The replica side of replication: another Rewind server (the source)
// pushes its points here with a replication token from `rewind peer add`.
//
//	POST /v1/replica/state     JSON replicaStateRequest → replicaStateResponse:
//	                           per volume, the time of the newest point held
//	POST /v1/replica/sessions  JSON replicaBeginRequest → replicaBeginResponse:
//	                           opens the pending point for one source point,
//	                           or says the point is here already
//
// then the session's /offer, /blocks and /commit as for a backup, except
// that an offer lists only the blocks that changed since the previous
// point (the replica compares each with what it holds), and the committed
// point keeps the source's time, kind and label. A point is committed only
// once every block it needs is durable here.
//
// A peer writes only machines registered for it (created on first use);
// a machine name taken by a local machine or another peer is refused.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
	"github.com/rewind-cdp/rewind/repository/pack"
)

// replicaFlushBytes bounds what a replica session holds before making it
// durable: at most this much is sent again after the replica crashes.
const replicaFlushBytes = 4 << 20

// maxStateVolumes bounds the volumes of one state request.
const maxStateVolumes = 4096

type replicaVolume struct {
	Machine string `json:"machine"`
	Volume  string `json:"volume"`
}

type replicaStateRequest struct {
	Volumes []replicaVolume `json:"volumes"`
}

type replicaVolumeState struct {
	Machine string `json:"machine"`
	Volume  string `json:"volume"`
	// Newest is the time of the volume's newest point here, in Unix
	// nanoseconds (0: none).
	Newest int64 `json:"newest_ns"`
}

type replicaStateResponse struct {
	Peer    string               `json:"peer"`
	Volumes []replicaVolumeState `json:"volumes"`
}

type replicaBeginRequest struct {
	Machine    string `json:"machine"`
	Volume     string `json:"volume"`
	VolumeKind string `json:"volume_kind"`
	Size       int64  `json:"size"`
	BlockSize  int64  `json:"block_size"`
	Time       int64  `json:"time_ns"`
	Kind       string `json:"kind"`
	Label      string `json:"label"`
	// Hash names the source repository's block hash: the blocks keep it.
	Hash string `json:"hash"`
}

type replicaBeginResponse struct {
	// Have: the replica holds this point (or a newer one) already.
	Have         bool     `json:"have"`
	Session      string   `json:"session,omitempty"`
	PointID      int64    `json:"point_id,omitempty"`
	Resumed      bool     `json:"resumed,omitempty"`
	Compressions []string `json:"compressions,omitempty"`
}

// peerFrom returns the peer a request authenticated as, or answers 403.
func peerFrom(w http.ResponseWriter, r *http.Request) (catalog.Peer, bool) {
	p, ok := r.Context().Value(peerKey{}).(catalog.Peer)
	if !ok {
		slog.Warn("refused a machine token on the replication endpoint", "remote", r.RemoteAddr)
		httpError(w, http.StatusForbidden, "this is a machine token: replication needs a token from 'rewind peer add' on the target")
	}
	return p, ok
}

func (s *Server) replicaState(w http.ResponseWriter, r *http.Request) {
	p, ok := peerFrom(w, r)
	if !ok {
		return
	}
	var req replicaStateRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<22)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "replica state: "+err.Error())
		return
	}
	if len(req.Volumes) > maxStateVolumes {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("replica state: %d volumes, at most %d per request", len(req.Volumes), maxStateVolumes))
		return
	}
	ctx := r.Context()
	resp := replicaStateResponse{Peer: p.Name, Volumes: []replicaVolumeState{}}
	for _, v := range req.Volumes {
		st := replicaVolumeState{Machine: v.Machine, Volume: v.Volume}
		vol, err := s.repo.Catalog.Volume(ctx, v.Machine, v.Volume)
		switch {
		case errors.Is(err, catalog.ErrNotFound):
			// Not here yet; a clash is reported when a point is sent.
		case err != nil:
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		default:
			owner, err := s.repo.Catalog.MachineOwner(ctx, vol.MachineID)
			if err != nil {
				httpError(w, http.StatusInternalServerError, err.Error())
				return
			}
			if owner != p.Name {
				httpError(w, http.StatusConflict, clashMessage(v.Machine, owner))
				return
			}
			t, err := s.repo.Catalog.NewestPointTime(ctx, vol.ID)
			if err != nil {
				httpError(w, http.StatusInternalServerError, err.Error())
				return
			}
			if !t.IsZero() {
				st.Newest = t.UnixNano()
			}
		}
		resp.Volumes = append(resp.Volumes, st)
	}
	writeJSON(w, resp)
}

func clashMessage(machine, owner string) string {
	if owner == "" {
		return fmt.Sprintf("machine %q is protected locally on the target: a replica never mixes with a local machine (rename one of them)", machine)
	}
	return fmt.Sprintf("machine %q is replicated to the target from peer %q already", machine, owner)
}

func (s *Server) replicaBegin(w http.ResponseWriter, r *http.Request) {
	p, ok := peerFrom(w, r)
	if !ok {
		return
	}
	var req replicaBeginRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "replica begin: "+err.Error())
		return
	}
	if err := ValidName(req.Machine); err != nil {
		httpError(w, http.StatusBadRequest, "machine: "+err.Error())
		return
	}
	if err := ValidName(req.Volume); err != nil {
		httpError(w, http.StatusBadRequest, "volume: "+err.Error())
		return
	}
	if err := ValidBlockSize(req.BlockSize); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Size <= 0 || req.Time <= 0 || req.Kind == "" {
		httpError(w, http.StatusBadRequest, "replica begin: size, time and kind are required")
		return
	}
	if req.VolumeKind != catalog.VolumeBlock && req.VolumeKind != catalog.VolumeDir {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("replica begin: volume kind %q", req.VolumeKind))
		return
	}
	hash, err := pack.HashID(req.Hash)
	if err != nil {
		httpError(w, http.StatusBadRequest, "replica begin: "+err.Error())
		return
	}
	ctx := r.Context()
	m, err := s.repo.Catalog.ReplicaMachine(ctx, p, req.Machine)
	if errors.Is(err, catalog.ErrMachineClash) {
		slog.Warn("refused a replicated machine whose name is taken", "peer", p.Name, "machine", req.Machine)
		httpError(w, http.StatusConflict, err.Error()+": a replica never mixes with another machine (rename one of them)")
		return
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	vol, err := s.repo.Catalog.Volume(ctx, m.Name, req.Volume) // no write transaction when it exists
	if errors.Is(err, catalog.ErrNotFound) {
		vol, err = s.repo.Catalog.EnsureVolumeKind(ctx, m.ID, req.Volume, req.VolumeKind, req.Size, req.BlockSize)
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if vol.Kind != req.VolumeKind || vol.BlockSize != req.BlockSize {
		httpError(w, http.StatusConflict, fmt.Sprintf("volume %s/%s here is a %s volume of %d-byte blocks; the source's is a %s volume of %d-byte blocks",
			m.Name, vol.Name, vol.Kind, vol.BlockSize, req.VolumeKind, req.BlockSize))
		return
	}
	s.supersede(vol.ID)
	t := time.Unix(0, req.Time).UTC()
	pt, resumed, have, err := s.repo.Catalog.BeginReplicaPoint(ctx, vol.ID, req.Size, t, req.Kind, req.Label)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if have {
		writeJSON(w, replicaBeginResponse{Have: true})
		return
	}
	idb := make([]byte, 16)
	rand.Read(idb)
	sess := &session{
		id: hex.EncodeToString(idb), machine: m, volume: vol, point: pt, seeded: true,
		blockSize: vol.BlockSize, nblocks: (req.Size + vol.BlockSize - 1) / vol.BlockSize,
		expect: map[int64]expected{}, ranges: map[int64]*blockRange{}, work: map[int64][]byte{},
		hash: hash, replica: true, peerID: p.ID, srcTime: t, srcKind: req.Kind, srcLbl: req.Label,
	}
	s.mu.Lock()
	s.sessions[sess.id] = sess
	s.byVolume[vol.ID] = sess
	s.mu.Unlock()
	slog.Debug("replica session begun", "peer", p.Name, "machine", m.Name, "volume", vol.Name, "point", pt.ID, "time", t, "resumed", resumed)
	writeJSON(w, replicaBeginResponse{Session: sess.id, PointID: pt.ID, Resumed: resumed, Compressions: pack.Compressions()})
}
