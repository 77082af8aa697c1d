package volume

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// lvm2's JSON reports ("--reportformat json") look like
//
//	{"report": [{"lv": [{"lv_name": "x", "lv_size": "1073741824", ...}]}]}
//
// with every value a string and lists (lv_tags) comma-separated. The
// "json_std" format (lvm2 ≥ 2.03.17) writes numbers as numbers and lists as
// arrays; both are read here so an lvm.conf that picks either still works.

// lvRow is one row of `lvs -o lv_name,vg_name,lv_size,lv_tags,lv_path`.
type lvRow struct {
	Name string    `json:"lv_name"`
	VG   string    `json:"vg_name"`
	Size lvmNumber `json:"lv_size"`
	Tags lvmList   `json:"lv_tags"`
	Path string    `json:"lv_path"`
}

// vgRow is one row of `vgs -o vg_name,vg_extent_size`.
type vgRow struct {
	Name       string    `json:"vg_name"`
	ExtentSize lvmNumber `json:"vg_extent_size"`
}

type lvReport struct {
	Report []struct {
		LV []lvRow `json:"lv"`
	} `json:"report"`
}

type vgReport struct {
	Report []struct {
		VG []vgRow `json:"vg"`
	} `json:"report"`
}

// parseLVs reads an lvs JSON report.
func parseLVs(out []byte) ([]lvRow, error) {
	var r lvReport
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("reading lvs' JSON report: %w", err)
	}
	var rows []lvRow
	for _, rep := range r.Report {
		rows = append(rows, rep.LV...)
	}
	return rows, nil
}

// parseVGs reads a vgs JSON report.
func parseVGs(out []byte) ([]vgRow, error) {
	var r vgReport
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("reading vgs' JSON report: %w", err)
	}
	var rows []vgRow
	for _, rep := range r.Report {
		rows = append(rows, rep.VG...)
	}
	return rows, nil
}

// lvmNumber is a byte count printed with --units b --nosuffix: "1073741824"
// (json), 1073741824 (json_std), or "1073741824B" if --nosuffix was lost.
type lvmNumber int64

func (n *lvmNumber) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	s = strings.TrimSuffix(strings.TrimSpace(s), "B")
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%s is not a byte count (lvm2 must be run with --units b --nosuffix)", b)
	}
	*n = lvmNumber(v)
	return nil
}

// lvmList is a list field: "a,b" (json) or ["a","b"] (json_std).
type lvmList []string

func (l *lvmList) UnmarshalJSON(b []byte) error {
	var arr []string
	if err := json.Unmarshal(b, &arr); err == nil {
		*l = arr
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s is neither a string nor a list of strings", b)
	}
	*l = nil
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			*l = append(*l, t)
		}
	}
	return nil
}
