// Package disk lays out and writes slate's GPT disk: the ESP, two root slots
// and the state partition, with the types of the Discoverable Partitions
// Specification. The table is written by go-diskfs; partition contents are
// written by the caller at the offsets the Plan gives.
package disk

import (
	"crypto/sha256"
	"fmt"
	"os"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"
	"github.com/slate-os/slate/boot"
)

const (
	sector = 512
	// align puts every partition on a 1 MiB boundary, as partitioning tools
	// do, so writes line up with any underlying block size.
	align = 1 << 20
)

// Layout is the sizes a build chose.
type Layout struct {
	ESPSize, SlotSize, StateSize int64
}

// Partition is one planned partition. Start and Size are in bytes.
type Partition struct {
	Number     int    `json:"number"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	GUID       string `json:"guid"`
	Start      int64  `json:"start"`
	Size       int64  `json:"size"`
	Attributes uint64 `json:"attributes"`
}

// Plan is a whole disk.
type Plan struct {
	Size       int64       `json:"size"`
	GUID       string      `json:"guid"`
	Partitions []Partition `json:"partitions"`
}

// GUID derives a stable GUID from a seed and a label, so the same image
// gives the same disk byte for byte. It is shaped as a version 4 UUID.
func GUID(seed []byte, label string) string {
	h := sha256.Sum256(append(append([]byte{}, seed...), label...))
	var u uuid.UUID
	copy(u[:], h[:16])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u.String()
}

// NewPlan places the partitions in order, each 1 MiB aligned, with 1 MiB
// after the last for the backup GPT.
func NewPlan(l Layout, seed []byte) Plan {
	p := Plan{GUID: GUID(seed, "disk")}
	off := int64(align)
	add := func(num int, name, typ string, size int64, attrs uint64) {
		size = (size + align - 1) / align * align
		p.Partitions = append(p.Partitions, Partition{Number: num, Name: name, Type: typ,
			GUID: GUID(seed, name), Start: off, Size: size, Attributes: attrs})
		off += size
	}
	add(boot.NumESP, boot.PartESP, boot.TypeESP, l.ESPSize, 0)
	add(boot.NumRootA, boot.SlotA.PartitionName(), boot.TypeRootX8664, l.SlotSize, boot.AttrReadOnly|boot.AttrNoAuto)
	add(boot.NumRootB, boot.SlotB.PartitionName(), boot.TypeRootX8664, l.SlotSize, boot.AttrReadOnly|boot.AttrNoAuto)
	add(boot.NumState, boot.PartState, boot.TypeVar, l.StateSize, boot.AttrNoAuto)
	p.Size = off + align
	return p
}

// Part returns partition number n.
func (p Plan) Part(n int) Partition {
	for _, pt := range p.Partitions {
		if pt.Number == n {
			return pt
		}
	}
	return Partition{}
}

// ByName returns the partition with a GPT name, if any.
func (p Plan) ByName(name string) (Partition, bool) {
	for _, pt := range p.Partitions {
		if pt.Name == name {
			return pt, true
		}
	}
	return Partition{}, false
}

// Create makes a sparse file of the plan's size at path and writes the
// protective MBR and both GPT headers.
func Create(path string, p Plan) error {
	d, err := diskfs.Create(path, p.Size, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	defer d.Close()
	t := &gpt.Table{LogicalSectorSize: sector, PhysicalSectorSize: sector, GUID: p.GUID, ProtectiveMBR: true}
	for _, pt := range p.Partitions {
		t.Partitions = append(t.Partitions, &gpt.Partition{
			Index:      pt.Number,
			Start:      uint64(pt.Start / sector),
			End:        uint64((pt.Start+pt.Size)/sector - 1),
			Size:       uint64(pt.Size),
			Type:       gpt.Type(pt.Type),
			Name:       pt.Name,
			GUID:       pt.GUID,
			Attributes: pt.Attributes,
		})
	}
	if err := d.Partition(t); err != nil {
		return fmt.Errorf("writing the partition table of %s: %w", path, err)
	}
	return nil
}

// Read reads the partition table of a disk image.
func Read(path string) (Plan, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Plan{}, err
	}
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return Plan{}, fmt.Errorf("%s: %w", path, err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		return Plan{}, fmt.Errorf("%s: no partition table: %w", path, err)
	}
	t, ok := pt.(*gpt.Table)
	if !ok {
		return Plan{}, fmt.Errorf("%s: not a GPT disk", path)
	}
	// GUIDs in lower case, as the kernel shows PARTUUIDs and NewPlan makes them.
	p := Plan{Size: fi.Size(), GUID: strings.ToLower(t.GUID)}
	for _, gp := range t.Partitions {
		if gp.Type == gpt.Unused {
			continue
		}
		p.Partitions = append(p.Partitions, Partition{Number: gp.Index, Name: gp.Name, Type: string(gp.Type),
			GUID: strings.ToLower(gp.GUID), Start: int64(gp.Start) * sector, Size: int64(gp.End-gp.Start+1) * sector, Attributes: gp.Attributes})
	}
	return p, nil
}
