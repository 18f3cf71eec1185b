// Labels in Korean and English; the operator switches with the 한/EN button (kept in localStorage).
const L = {
  app: ["지킴이 상황판", "jikimi console"],
  login: ["로그인", "Log in"], username: ["아이디", "User name"], password: ["비밀번호", "Password"],
  logout: ["로그아웃", "Log out"], lang: ["EN", "한"],
  live: ["실시간", "LIVE"], disconnected: ["연결 끊김 — 표시된 값이 오래되었을 수 있음", "DISCONNECTED — values may be old"],
  last_event: ["마지막 수신", "last event"],
  map: ["지도", "Map"], site: ["현장", "Site"], incidents: ["사건", "Incidents"], commands: ["명령", "Commands"],
  forwarding: ["전파 현황", "Forwarding"], audit: ["감사 기록", "Audit log"],
  quarantine: ["격리 메시지", "Quarantine"], site_topic: ["현장 / 토픽", "Site / topic"],
  bytes: ["바이트", "Bytes"], no_quarantine: ["격리된 메시지 없음", "Nothing quarantined"],
  alarms: ["경보", "Alarms"], active: ["활성", "Active"], shelved: ["보류", "Shelved"],
  out_of_service: ["운용 제외", "Out of service"], no_alarms: ["활성 경보 없음", "No active alarms"],
  ack: ["확인", "Acknowledge"], shelve: ["보류", "Shelve"], unshelve: ["보류 해제", "Unshelve"],
  remove: ["운용 제외", "Out of service"], restore: ["운용 복귀", "Return to service"],
  reason: ["사유", "Reason"], duration: ["기간", "Duration"], cancel: ["취소", "Cancel"], close: ["닫기", "Close"],
  execute: ["실행", "Execute"], approve: ["승인", "Approve"], reject: ["거부", "Reject"],
  priority: ["등급", "Priority"], state: ["상태", "State"], age: ["경과", "Age"], value: ["값", "Value"],
  quality: ["품질", "Quality"], device: ["장치", "Device"], point: ["항목", "Point"], area: ["구역", "Area"],
  critical: ["긴급", "CRITICAL"], high: ["높음", "HIGH"], medium: ["중간", "MEDIUM"], low: ["낮음", "LOW"],
  normal: ["정상", "NORMAL"], offline: ["오프라인", "OFFLINE"], stale: ["데이터 지연", "STALE"], unknown: ["수신 전", "NO DATA"],
  online: ["온라인", "ONLINE"],
  unacknowledged: ["미확인", "Unacknowledged"], acknowledged: ["확인됨", "Acknowledged"],
  rtn_unacknowledged: ["복귀·미확인", "Cleared, unacknowledged"],
  good: ["정상", "good"], comm_fail: ["통신 장애", "comm fail"], out_of_range: ["범위 초과", "out of range"],
  sensor_fault: ["센서 고장", "sensor fault"],
  live_values: ["실시간 값", "Live values"], history: ["최근 1시간", "Last hour"], health: ["장치 상태", "Device health"],
  controls: ["차단기·출입문", "Barrier and gate"], rule_fired: ["발생 규칙", "Rule that fired"],
  no_rule: ["활성 경보 없음", "No alarm active"], snapshot: ["CCTV 스냅샷", "Camera snapshot"],
  no_snapshot: ["연결된 스냅샷 없음", "No snapshot linked"],
  forecast_drivers: ["예보 근거: 주변 현장", "Forecast driven by neighbours"], crossed_ago: ["기준 수위 도달", "crossed"],
  wet_now: ["침수 중", "wet"], min_ago: ["분 전", "min ago"], target: ["대상", "Target"],
  select_expires: ["선택 만료까지", "Selection expires in"], select_expired: ["선택이 만료됨 — 다시 선택하십시오", "Selection expired — select again"],
  cmd_expires: ["명령 만료까지", "Command expires in"], waiting_second: ["두 번째 승인자 대기 중", "Waiting for second approver"],
  issued_by: ["요청자", "Issued by"], approved_by: ["승인자", "Approved by"],
  verified: ["확인 완료", "Verified"], block_area: ["구역 차단", "Block area"], evacuate_area: ["구역 대피", "Evacuate area"],
  devices_acted: ["동작할 장치", "Devices it will act on"], no_devices: ["해당 장치 없음", "No device takes part"],
  operation: ["구역 작업", "Area operation"], unplaced: ["좌표 없는 현장", "Sites without position"],
  open_site: ["현장 보기", "Open site"], last_seen: ["마지막 수신", "last seen"],
  awaiting_approval: ["승인 대기", "awaiting approval"], sending: ["전송 중", "sending"], sent: ["전송됨", "sent"],
  received: ["수신됨", "received"], rejected: ["거부됨", "rejected"], expired: ["만료됨", "expired"],
  failed: ["실패", "failed"], timed_out: ["응답 없음", "timed out"], refused: ["거절됨", "refused"],
  cancelled: ["취소됨", "cancelled"], send_failed: ["전송 실패", "send failed"],
  pending_approvals: ["승인 대기 명령", "Commands awaiting approval"],
  forwarding_none: ["이 허브는 아직 전파 현황을 제공하지 않습니다", "This hub does not report forwarding yet"],
  no_deliveries: ["전파 기록 없음", "No deliveries"], recipient: ["수신처", "Recipient"], alert: ["경보문", "Alert"],
  attempts: ["시도", "Attempts"], delivered: ["전달됨", "delivered"], retrying: ["재시도 중", "retrying"],
  escalated: ["상향 보고", "escalated"],
  actor: ["행위자", "Actor"], action: ["동작", "Action"], time: ["시각", "Time"], detail: ["내용", "Detail"],
  incident_flood: ["경보 폭주: 구역별 사건으로 묶음", "Alarm flood: grouped into incidents by area"],
  alarms_n: ["건", "alarms"], close_incident: ["사건 종료", "Close incident"], open: ["진행", "open"], closed: ["종료", "closed"],
  no_incidents: ["사건 없음", "No incidents"], transitions: ["이력", "Transitions"],
  selection_note: ["선택 후 실행: 값과 경과 시간을 확인한 뒤 실행하십시오", "Select before operate: check the values and their age, then execute"],
  view_only: ["조회 전용 계정", "View-only account"], attribution: ["경계: 통계청 SGIS (공공누리 제1유형)", "Boundaries: Statistics Korea (SGIS), KOGL Type 1"],
  login_failed: ["로그인 실패", "Login failed"], seconds: ["초", "s"], minutes: ["분", "min"], hours: ["시간", "h"],
  min15: ["15분", "15 min"], h1: ["1시간", "1 h"], h4: ["4시간", "4 h"], h8: ["8시간", "8 h"],
  "barrier.close": ["차단기 닫기", "Close barrier"], "barrier.open": ["차단기 열기", "Open barrier"],
  "gate.close": ["출입문 닫기", "Close gate"], "gate.open": ["출입문 열기", "Open gate"],
  "siren.on": ["사이렌 켜기", "Siren on"], "siren.off": ["사이렌 끄기", "Siren off"],
  "sign.show": ["전광판 표시", "Show sign"], "broadcast.play": ["방송 송출", "Play broadcast"],
  "device.selftest": ["자가 진단", "Self-test"], message: ["방송 내용", "Broadcast"], text: ["표시 문구", "Sign text"],
  off: ["끄기", "off"], flood_warning: ["홍수 경고", "flood warning"], sign_blank: ["(빈 화면)", "(blank)"],
  block: ["차단", "block"], evacuate: ["대피", "evacuate"], worst: ["가장 심각한 상태", "worst state"],
  legend: ["범례", "Legend"], no_values: ["수신된 값 없음", "No values received"],
  escalation: ["상향 보고: 수신처 미확인", "ESCALATION: alert not acknowledged"], since: ["발생", "since"],
  esc_ack: ["확인", "Acknowledge"], sound_on: ["♪ 경보음 켜짐", "♪ Sound on"], sound_off: ["✕ 경보음 꺼짐", "✕ Sound muted"],
  sound_blocked: ["경보음 차단됨 (브라우저) — 눌러서 켜기", "Sound blocked by the browser — click to enable"],
  delivery_failed: ["전달 실패", "delivery failed"], undeliverable: ["전달 불가", "undeliverable"],
  no_recipient: ["수신처 없음", "no recipient"],
  exercise: ["훈련", "EXERCISE"], exercise_active: ["훈련 진행 중", "Exercise in progress"],
  exercise_start: ["훈련 시작", "Start exercise"], exercise_end: ["훈련 종료", "End exercise"],
  send_as_exercise: ["훈련으로 보내기 (모의 실행: 장치는 움직이지 않음)", "Send as exercise (dry run: nothing moves)"],
  exercise_note: ["훈련 경보는 CAP status Exercise로 전파됩니다", "Alerts of the exercise go out with CAP status Exercise"],
  exercise_cmd: ["훈련 명령: 모의 실행 (장치는 움직이지 않음)", "Exercise command: a dry run (nothing moves)"],
  started_by: ["시작한 사람", "Started by"], operations: ["구역 작업", "Area operations"],
  planned: ["계획됨", "planned"], kind: ["종류", "Kind"], params: ["설정값", "Parameters"], counts: ["집계", "Counts"],
  report: ["자가 진단 결과", "Self-test report"], ok: ["정상", "OK"], fail: ["이상", "FAIL"], why: ["원인", "Why"],
  events: ["최근 이벤트", "Recent events"], no_events: ["이벤트 없음", "No events"], late: ["지연 수신", "LATE"],
  late_note: ["통신 두절 중에 발생해 나중에 수신됨: 표시 시각은 원래 발생 시각", "Happened during an outage and arrived late: times shown are the original ones"],
  source_rule: ["허브 규칙", "hub rule"], source_edge: ["현장 장치", "edge"], source_forwarding: ["전파", "forwarding"],
  source_forecast: ["네트워크 예보", "network forecast"],
  not_forwarded: ["전파되지 않은 경보", "Alerts not forwarded"], all_forwarded: ["전파되지 않은 경보 없음", "Nothing left unforwarded"],
  count: ["건수", "Count"], view: ["보기", "View"],
  unknown_point: ["장치 등록 정보에 없는 항목 (참고용)", "Not a point of this device's birth (shown, not trusted)"], deliveries: ["전파 기록", "Deliveries"],
  reopen_note: ["열기는 두 사람 승인: 다른 감독자가 승인해야 전송됩니다", "Opening needs two people: another supervisor must approve before it is sent"],
};

let lang = localStorage.getItem("jk.lang") === "en" ? 1 : 0;

export function t(key) {
  const e = L[key];
  return e ? e[lang] : key;
}

export function currentLang() { return lang === 0 ? "ko" : "en"; }

export function toggleLang() {
  lang = 1 - lang;
  localStorage.setItem("jk.lang", lang ? "en" : "ko");
  document.documentElement.lang = currentLang();
}

document.documentElement.lang = currentLang();
