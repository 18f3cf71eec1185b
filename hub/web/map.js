// The jurisdiction map: city/county boundaries (Statistics Korea SGIS, shipped in data/) in an
// SVG with an equirectangular projection, sites drawn at their WGS84 position.
import { s } from "./dom.js";

const EN = {
  "수원시": "Suwon", "성남시": "Seongnam", "의정부시": "Uijeongbu", "안양시": "Anyang", "부천시": "Bucheon",
  "광명시": "Gwangmyeong", "평택시": "Pyeongtaek", "동두천시": "Dongducheon", "안산시": "Ansan", "고양시": "Goyang",
  "과천시": "Gwacheon", "구리시": "Guri", "남양주시": "Namyangju", "오산시": "Osan", "시흥시": "Siheung",
  "군포시": "Gunpo", "의왕시": "Uiwang", "하남시": "Hanam", "용인시": "Yongin", "파주시": "Paju", "이천시": "Icheon",
  "안성시": "Anseong", "김포시": "Gimpo", "화성시": "Hwaseong", "광주시": "Gwangju", "양주시": "Yangju",
  "포천시": "Pocheon", "여주시": "Yeoju", "연천군": "Yeoncheon", "가평군": "Gapyeong", "양평군": "Yangpyeong",
};

const W = 1000;

/** The district names (``city`` property) of a city id as the province names it (``bucheon``). */
export function districtsOf(cityId) {
  return new Set(Object.entries(EN).filter(([, en]) => en.toLowerCase() === cityId).map(([ko]) => ko));
}

export class Projection {
  constructor(geo) {
    let minLon = 180, maxLon = -180, minLat = 90, maxLat = -90;
    for (const f of geo.features) for (const poly of f.geometry.coordinates) for (const [lon, lat] of poly[0]) {
      minLon = Math.min(minLon, lon); maxLon = Math.max(maxLon, lon);
      minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
    }
    this.k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
    this.minLon = minLon; this.maxLat = maxLat;
    this.scale = W / ((maxLon - minLon) * this.k);
    this.height = (maxLat - minLat) * this.scale;
  }
  xy(lon, lat) { return [(lon - this.minLon) * this.k * this.scale, (this.maxLat - lat) * this.scale]; }
}

function inside(x, y, ring) {
  let hit = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = ring[i], [xj, yj] = ring[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
  }
  return hit;
}

/** The cities (``city`` property) holding the given lon/lat points: the jurisdiction to fit. */
export function citiesOf(geo, points) {
  const out = new Set();
  for (const [lon, lat] of points) {
    for (const f of geo.features) {
      if (f.geometry.coordinates.some((poly) => inside(lon, lat, poly[0]))) out.add(f.properties.city);
    }
  }
  return out;
}

/** The viewBox [x, y, w, h] around the given cities (all of the province when none), padded. */
export function fit(geo, proj, cities) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const f of geo.features) {
    if (cities.size && !cities.has(f.properties.city)) continue;
    for (const poly of f.geometry.coordinates) for (const [lon, lat] of poly[0]) {
      const [x, y] = proj.xy(lon, lat);
      x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
    }
  }
  const pad = Math.max(x1 - x0, y1 - y0) * 0.06;
  return [x0 - pad, y0 - pad, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad];
}

/** Static layer: one path per district, one label per city. ``u``: viewBox units per screen pixel. */
export function boundaries(geo, proj, lang, cities, u) {
  const g = s("g", { class: "bounds" });
  const boxes = new Map();
  for (const f of geo.features) {
    let d = "";
    for (const poly of f.geometry.coordinates) for (const ring of poly) {
      d += ring.map(([lon, lat], i) => {
        const [x, y] = proj.xy(lon, lat);
        const b = boxes.get(f.properties.city) || [Infinity, Infinity, -Infinity, -Infinity, 0, 0, 0];
        b[4] += x; b[5] += y; b[6] += 1;
        boxes.set(f.properties.city, b);
        return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      }).join("") + "Z";
    }
    g.append(s("path", { d, class: cities.has(f.properties.city) ? "district home" : "district" },
      s("title", {}, f.properties.name)));
  }
  const labels = s("g", { class: "city-labels", "aria-hidden": "true" });
  for (const [city, b] of boxes) {
    labels.append(s("text", { x: (b[4] / b[6]).toFixed(0), y: (b[5] / b[6]).toFixed(0), "font-size": (12 * u).toFixed(1) },
      lang === "ko" ? city : (EN[city] || city)));
  }
  return [g, labels];
}

