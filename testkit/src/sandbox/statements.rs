//! Real-format trade statements, written by the sandboxes from their own trade state, by the
//! tests (with planted breaks) and by the reconciliation benchmark (a million lines, streamed).
//!
//! - Alipay (china-wallets.md A.11): a zip holding `{pid}0156_{yyyyMMdd}_业务明细.csv` and
//!   `…_业务明细(汇总).csv`, GBK contents and GBK entry names without the zip UTF-8 flag, `#`
//!   preamble and footer lines with the exact dash counts, ID-like cells ending in a TAB.
//! - WeChat Pay (B.7): UTF-8 with a BOM, CRLF, every cell prefixed with a backtick, amounts in
//!   yuan (fees to five decimals), a summary header and line.
//!
//! - UnionPay (more-wallets.md §1.6): the ZM transaction file, 42 fixed-width byte fields (the
//!   official demo's widths) separated by one space, CRLF, GBK text, inside a zip beside an
//!   empty ZME file; the file-transfer answer carries that zip zlib-deflated in base64.
//!
//! Fees are the sandbox's choice: 0.6 % of each payment (UnionPay: 0.38 %), given back pro rata on refunds. Alipay
//! shows the service fee as a negative amount on trades and a positive one on refunds here;
//! Moongate's reader accepts either sign.

use std::io::{self, Write};

use moongate_contract::statement::BEIJING as BEIJING_OFFSET;
use moongate_contract::{Currency, Money};
use time::{Date, OffsetDateTime};

/// `yyyy-MM-dd HH:mm:ss`, Beijing time.
pub fn beijing(at: OffsetDateTime) -> String {
    let t = at.to_offset(BEIJING_OFFSET);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn yuan(fen: i64) -> String {
    Money::new(fen, Currency::CNY).to_decimal_string()
}

fn yuan_e5(e5: i64) -> String {
    let sign = if e5 < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:05}",
        e5.unsigned_abs() / 100_000,
        e5.unsigned_abs() % 100_000
    )
}

/// `yyyyMMdd`.
pub fn compact_day(day: Date) -> String {
    format!(
        "{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

fn chinese_day(day: Date) -> String {
    format!(
        "{:04}年{:02}月{:02}日",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// One line of an Alipay trade bill.
#[derive(Clone, Debug)]
pub struct AlipayBillEntry {
    /// `支付宝交易号`.
    pub trade_no: String,
    /// `商户订单号`.
    pub out_trade_no: String,
    /// For a refund line, `退款批次号/请求号` (`out_request_no`).
    pub refund_request_no: Option<String>,
    /// `商品名称`.
    pub subject: String,
    /// `创建时间`.
    pub created_at: OffsetDateTime,
    /// `完成时间`.
    pub finished_at: OffsetDateTime,
    /// Amount (positive; written negative on refund lines), fen.
    pub amount: i64,
    /// `服务费` magnitude, fen.
    pub fee: i64,
}

/// The sandbox's Alipay fee: 0.6 %, rounded half up to the fen.
pub fn alipay_fee(amount: i64) -> i64 {
    (amount * 6 + 500) / 1000
}

/// The sandbox's WeChat Pay fee: 0.6 %, in 1/100,000 yuan (exact).
pub fn wechat_fee_e5(amount: i64) -> i64 {
    amount * 6
}

fn csv_text(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!(
            "\"{}\"",
            cell.replace('"', "\"\"").replace(['\r', '\n'], " ")
        )
    } else {
        cell.to_owned()
    }
}

/// The detail CSV (`业务明细.csv`) as text, before GBK encoding.
pub fn alipay_detail_csv(
    pid: &str,
    day: Date,
    entries: &[AlipayBillEntry],
    exported_at: OffsetDateTime,
) -> String {
    let dashes = |n: usize| "-".repeat(n);
    let next = day.next_day().unwrap_or(day);
    let mut out = String::with_capacity(512 + entries.len() * 256);
    out.push_str("#支付宝业务明细查询\r\n");
    out.push_str(&format!("#账号：[{pid}0156]\r\n"));
    out.push_str(&format!(
        "#起始日期：[{} 00:00:00]   终止日期：[{} 00:00:00]\r\n",
        chinese_day(day),
        chinese_day(next)
    ));
    out.push_str(&format!("#{}业务明细列表{}\r\n", dashes(41), dashes(40)));
    out.push_str("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注\r\n");
    let (mut trades, mut trade_sum, mut refunds, mut refund_sum) = (0, 0_i64, 0, 0_i64);
    for entry in entries {
        let refund = entry.refund_request_no.is_some();
        let (kind, amount, fee) = if refund {
            refunds += 1;
            refund_sum -= entry.amount;
            ("退款", -entry.amount, entry.fee)
        } else {
            trades += 1;
            trade_sum += entry.amount;
            ("交易", entry.amount, -entry.fee)
        };
        let subject = csv_text(&entry.subject);
        out.push_str(&format!(
            "{}\t,{}\t,{kind}\t,{subject},{},{},moongate_store\t,Moongate\t,moongate\t,\t,*宫(cha***@example.com)\t,{},{},0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,{}\t,{},0.00,{subject}\r\n",
            entry.trade_no,
            entry.out_trade_no,
            beijing(entry.created_at),
            beijing(entry.finished_at),
            yuan(amount),
            yuan(amount),
            entry.refund_request_no.as_deref().unwrap_or(""),
            yuan(fee),
        ));
    }
    out.push_str(&format!(
        "#{}业务明细列表结束{}\r\n",
        dashes(41),
        dashes(36)
    ));
    out.push_str(&format!(
        "#交易合计：{trades}笔，商家实收共{}元，商家优惠共0.00元\r\n",
        yuan(trade_sum)
    ));
    out.push_str(&format!(
        "#退款合计：{refunds}笔，商家实收退款共{}元，商家优惠退款共0.00元\r\n",
        yuan(refund_sum)
    ));
    out.push_str(&format!(
        "#导出时间：[{}]\r\n",
        exported_chinese(exported_at)
    ));
    out
}

fn exported_chinese(at: OffsetDateTime) -> String {
    let t = at.to_offset(BEIJING_OFFSET);
    format!(
        "{} {:02}:{:02}:{:02}",
        chinese_day(t.date()),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The summary CSV (`业务明细(汇总).csv`) as text.
fn alipay_summary_csv(
    pid: &str,
    day: Date,
    entries: &[AlipayBillEntry],
    exported_at: OffsetDateTime,
) -> String {
    let dashes = |n: usize| "-".repeat(n);
    let next = day.next_day().unwrap_or(day);
    let trades: Vec<_> = entries
        .iter()
        .filter(|e| e.refund_request_no.is_none())
        .collect();
    let refunds = entries.len() - trades.len();
    let net: i64 = entries
        .iter()
        .map(|e| {
            if e.refund_request_no.is_some() {
                -e.amount
            } else {
                e.amount
            }
        })
        .sum();
    let fees: i64 = entries
        .iter()
        .map(|e| {
            if e.refund_request_no.is_some() {
                e.fee
            } else {
                -e.fee
            }
        })
        .sum();
    format!(
        "#支付宝业务汇总查询\r\n#账号：[{pid}0156]\r\n#起始日期：[{} 00:00:00]   终止日期：[{} 00:00:00]\r\n#{}业务汇总列表{}\r\n门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）\r\nmoongate_store\t,Moongate\t,{},{refunds},{},{},0.00,0.00,0.00,{},0.00,{}\r\n合计,,{},{refunds},{},{},0.00,0.00,0.00,{},0.00,{}\r\n#{}业务汇总列表结束{}\r\n#导出时间：[{}]\r\n",
        chinese_day(day),
        chinese_day(next),
        dashes(41),
        dashes(40),
        trades.len(),
        yuan(net),
        yuan(net),
        yuan(fees),
        yuan(net + fees),
        trades.len(),
        yuan(net),
        yuan(net),
        yuan(fees),
        yuan(net + fees),
        dashes(40),
        dashes(36),
        exported_chinese(exported_at),
    )
}

/// Encodes text as GBK (every character Moongate writes has a GBK form).
pub fn gbk(text: &str) -> Vec<u8> {
    encoding_rs::GBK.encode(text).0.into_owned()
}

/// The whole bill zip as Alipay serves it.
pub fn alipay_trade_bill_zip(
    pid: &str,
    day: Date,
    entries: &[AlipayBillEntry],
    exported_at: OffsetDateTime,
) -> io::Result<Vec<u8>> {
    let stem = format!("{pid}0156_{}", compact_day(day));
    let files = [
        (
            gbk(&format!("{stem}_业务明细.csv")),
            gbk(&alipay_detail_csv(pid, day, entries, exported_at)),
        ),
        (
            gbk(&format!("{stem}_业务明细(汇总).csv")),
            gbk(&alipay_summary_csv(pid, day, entries, exported_at)),
        ),
    ];
    write_zip(&files, exported_at)
}

/// The zip's file name.
pub fn alipay_zip_name(pid: &str, day: Date) -> String {
    format!("{pid}0156_{}.csv.zip", compact_day(day))
}

/// A minimal zip writer: deflated entries whose names are raw bytes (GBK) and carry no UTF-8
/// flag, as Alipay's are. (The `zip` crate always flags non-ASCII names as UTF-8.)
pub fn write_zip(files: &[(Vec<u8>, Vec<u8>)], at: OffsetDateTime) -> io::Result<Vec<u8>> {
    let t = at.to_offset(BEIJING_OFFSET);
    let dos_time =
        (u16::from(t.hour()) << 11) | (u16::from(t.minute()) << 5) | u16::from(t.second() / 2);
    let dos_date = (u16::try_from(t.year() - 1980).unwrap_or(0) << 9)
        | (u16::from(u8::from(t.month())) << 5)
        | u16::from(t.day());
    let mut out = Vec::new();
    let mut central = Vec::new();
    let too_big = || io::Error::other("zip entry too large");
    for (name, data) in files {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data)?;
        let compressed = encoder.finish()?;
        let crc = crc32fast::hash(data);
        let offset = u32::try_from(out.len()).map_err(|_| too_big())?;
        let csize = u32::try_from(compressed.len()).map_err(|_| too_big())?;
        let usize_ = u32::try_from(data.len()).map_err(|_| too_big())?;
        let name_len = u16::try_from(name.len()).map_err(|_| too_big())?;
        let mut header = Vec::new();
        header.extend_from_slice(&0x0403_4b50_u32.to_le_bytes());
        header.extend_from_slice(&20_u16.to_le_bytes()); // version needed
        header.extend_from_slice(&0_u16.to_le_bytes()); // flags: no UTF-8 bit
        header.extend_from_slice(&8_u16.to_le_bytes()); // deflate
        header.extend_from_slice(&dos_time.to_le_bytes());
        header.extend_from_slice(&dos_date.to_le_bytes());
        header.extend_from_slice(&crc.to_le_bytes());
        header.extend_from_slice(&csize.to_le_bytes());
        header.extend_from_slice(&usize_.to_le_bytes());
        header.extend_from_slice(&name_len.to_le_bytes());
        header.extend_from_slice(&0_u16.to_le_bytes()); // extra
        out.extend_from_slice(&header);
        out.extend_from_slice(name);
        out.extend_from_slice(&compressed);
        central.extend_from_slice(&0x0201_4b50_u32.to_le_bytes());
        central.extend_from_slice(&20_u16.to_le_bytes()); // made by
        central.extend_from_slice(header.get(4..26).unwrap_or_default());
        central.extend_from_slice(&name_len.to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attributes
        central.extend_from_slice(&0_u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let central_offset = u32::try_from(out.len()).map_err(|_| too_big())?;
    let central_size = u32::try_from(central.len()).map_err(|_| too_big())?;
    let count = u16::try_from(files.len()).map_err(|_| too_big())?;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50_u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // disk numbers
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&central_size.to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0_u16.to_le_bytes()); // comment
    Ok(out)
}

/// One line of a UnionPay ZM file.
#[derive(Clone, Debug)]
pub struct UnionPayZmEntry {
    /// `01` consume, `04` refund, `31` undo.
    pub txn_type: String,
    /// `txnSubType`.
    pub txn_sub_type: String,
    /// When it cleared (written `MMDDhhmmss`, Beijing).
    pub at: OffsetDateTime,
    /// `txnAmt`, fen.
    pub amount: i64,
    /// UnionPay's `queryId`.
    pub query_id: String,
    /// The transaction's `orderId`.
    pub order_id: String,
    /// `merId`.
    pub mer_id: String,
    /// A refund's consume `queryId`.
    pub orig_qry_id: Option<String>,
    /// A refund's consume `orderId`.
    pub orig_order_id: Option<String>,
    /// The request's `reqReserved`.
    pub reserved: String,
    /// The fee's magnitude, fen.
    pub fee: i64,
}

/// The sandbox's UnionPay fee: 0.38 %, rounded half up to the fen.
pub fn unionpay_fee(amount: i64) -> i64 {
    (amount * 38 + 5000) / 10_000
}

/// ZM field widths (the official demo's `parseZMFile`).
const ZM_WIDTHS: [usize; 42] = [
    3, 11, 11, 6, 10, 19, 12, 4, 2, 21, 2, 32, 2, 6, 10, 13, 13, 4, 15, 2, 2, 6, 2, 4, 32, 1, 21,
    15, 1, 15, 32, 13, 13, 8, 32, 13, 13, 12, 2, 1, 32, 98,
];

/// One ZM line (607 bytes, no line end). Amounts the sandbox signs with `C` (credit to the
/// merchant) or `D` (debit) before 12 digits: the consume's settlement is a credit and its
/// fee a debit, a refund's the other way round (sandbox choice; the published format is not at
/// hand).
pub fn unionpay_zm_line(entry: &UnionPayZmEntry) -> Vec<u8> {
    let t = entry.at.to_offset(BEIJING_OFFSET);
    let txn_time = format!(
        "{:02}{:02}{:02}{:02}{:02}",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let consume = entry.txn_type == "01";
    let (settle_sign, fee_sign) = if consume { ('C', 'D') } else { ('D', 'C') };
    let trace = entry
        .query_id
        .get(entry.query_id.len().saturating_sub(6)..)
        .unwrap_or_default()
        .to_owned();
    let cells: Vec<(usize, Vec<u8>)> = vec![
        (
            0,
            if consume {
                b"S22".to_vec()
            } else {
                b"S33".to_vec()
            },
        ),
        (1, b"48021000".to_vec()),
        (2, b"00010000".to_vec()),
        (3, trace.into_bytes()),
        (4, txn_time.into_bytes()),
        (5, b"6216********0018".to_vec()),
        (6, format!("{:012}", entry.amount).into_bytes()),
        (7, b"5411".to_vec()),
        (8, b"08".to_vec()),
        (9, entry.query_id.clone().into_bytes()),
        (11, entry.order_id.clone().into_bytes()),
        (12, b"01".to_vec()),
        (15, format!("{fee_sign}{:012}", entry.fee).into_bytes()),
        (
            16,
            format!("{settle_sign}{:012}", entry.amount).into_bytes(),
        ),
        (17, b"0002".to_vec()),
        (19, entry.txn_type.clone().into_bytes()),
        (20, entry.txn_sub_type.clone().into_bytes()),
        (21, b"000000".to_vec()),
        (22, b"01".to_vec()),
        (
            26,
            entry.orig_qry_id.clone().unwrap_or_default().into_bytes(),
        ),
        (27, entry.mer_id.clone().into_bytes()),
        // A GBK name, so that offsets are bytes and never characters.
        (30, gbk("月门茶馆")),
        (34, entry.reserved.clone().into_bytes()),
        (
            40,
            entry.orig_order_id.clone().unwrap_or_default().into_bytes(),
        ),
    ];
    let mut line = Vec::with_capacity(607);
    for (index, width) in ZM_WIDTHS.iter().enumerate() {
        if index > 0 {
            line.push(b' ');
        }
        let value = cells
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(&[][..], |(_, v)| v.as_slice());
        let take = value.len().min(*width);
        line.extend_from_slice(value.get(..take).unwrap_or_default());
        line.extend(std::iter::repeat_n(b' ', width - take));
    }
    line
}

/// A UnionPay bill zip (`{merId}_{yyyyMMdd}.zip`): `INN{yyMMdd}88ZM_{merId}` with the lines,
/// and an empty `INN{yyMMdd}88ZME_{merId}` (no errors).
pub fn unionpay_bill_zip(
    mer_id: &str,
    day: Date,
    entries: &[UnionPayZmEntry],
    at: OffsetDateTime,
) -> io::Result<Vec<u8>> {
    let stem = format!(
        "INN{:02}{:02}{:02}88",
        day.year() % 100,
        u8::from(day.month()),
        day.day()
    );
    let mut zm = Vec::with_capacity(entries.len() * 609);
    for entry in entries {
        zm.extend_from_slice(&unionpay_zm_line(entry));
        zm.extend_from_slice(b"\r\n");
    }
    write_zip(
        &[
            (format!("{stem}ZM_{mer_id}").into_bytes(), zm),
            (format!("{stem}ZME_{mer_id}").into_bytes(), Vec::new()),
        ],
        at,
    )
}

/// `fileContent`: the zip zlib-deflated, in base64 (what the official SDK inflates).
pub fn unionpay_file_content(zip: &[u8]) -> io::Result<String> {
    use base64::Engine as _;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(zip)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(encoder.finish()?))
}

/// One line of a WeChat Pay trade bill (`bill_type=ALL`).
#[derive(Clone, Debug)]
pub struct WechatBillEntry {
    /// `交易时间` (the payment's or the refund's success time).
    pub at: OffsetDateTime,
    /// `公众账号ID`.
    pub appid: String,
    /// `商户号`.
    pub mchid: String,
    /// `特约商户号`: the sub-merchant of a service provider's order, `0` for a direct merchant.
    pub sub_mchid: String,
    /// `微信订单号`.
    pub transaction_id: String,
    /// `商户订单号`.
    pub out_trade_no: String,
    /// `用户标识`.
    pub openid: String,
    /// `交易类型`.
    pub trade_type: String,
    /// For a refund line: (`微信退款单号`, `商户退款单号`).
    pub refund: Option<(String, String)>,
    /// The payment's or the refund's amount, fen.
    pub amount: i64,
    /// `手续费` magnitude, 1/100,000 yuan.
    pub fee_e5: i64,
    /// `商品名称`.
    pub description: String,
    /// `货币种类`.
    pub currency: String,
}

/// Writes a WeChat Pay `ALL` trade bill, streaming (the summary is written last); returns its
/// SHA-1 is the caller's business.
pub fn write_wechat_trade_bill<W: Write>(
    out: &mut W,
    entries: impl IntoIterator<Item = WechatBillEntry>,
) -> io::Result<()> {
    out.write_all(b"\xEF\xBB\xBF")?;
    out.write_all("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n".as_bytes())?;
    let (mut count, mut settled, mut refunded, mut fees, mut ordered, mut requested) =
        (0_u64, 0_i64, 0_i64, 0_i64, 0_i64, 0_i64);
    for e in entries {
        count += 1;
        let description = e.description.replace([',', '`', '\r', '\n'], " ");
        match &e.refund {
            None => {
                settled += e.amount;
                ordered += e.amount;
                fees += e.fee_e5;
                write!(
                    out,
                    "`{},`{},`{},`{},`,`{},`{},`{},`{},`SUCCESS,`OTHERS,`{},`{},`0.00,`0,`0,`0.00,`0.00,`,`,`{description},`,`{},`0.60%,`{},`0.00,`\r\n",
                    beijing(e.at),
                    e.appid,
                    e.mchid,
                    e.sub_mchid,
                    e.transaction_id,
                    e.out_trade_no,
                    e.openid,
                    e.trade_type,
                    e.currency,
                    yuan(e.amount),
                    yuan_e5(e.fee_e5),
                    yuan(e.amount),
                )?;
            }
            Some((refund_id, out_refund_no)) => {
                refunded += e.amount;
                requested += e.amount;
                fees -= e.fee_e5;
                write!(
                    out,
                    "`{},`{},`{},`{},`,`{},`{},`{},`{},`REFUND,`OTHERS,`{},`0.00,`0.00,`{refund_id},`{out_refund_no},`{},`0.00,`ORIGINAL,`SUCCESS,`{description},`,`{},`0.60%,`0.00,`{},`\r\n",
                    beijing(e.at),
                    e.appid,
                    e.mchid,
                    e.sub_mchid,
                    e.transaction_id,
                    e.out_trade_no,
                    e.openid,
                    e.trade_type,
                    e.currency,
                    yuan(e.amount),
                    yuan_e5(-e.fee_e5),
                    yuan(e.amount),
                )?;
            }
        }
    }
    out.write_all("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n".as_bytes())?;
    write!(
        out,
        "`{count},`{},`{},`0.00,`{},`{},`{}\r\n",
        yuan(settled),
        yuan(refunded),
        yuan_e5(fees),
        yuan(ordered),
        yuan(requested)
    )?;
    Ok(())
}

/// SHA-1 (lower-case hex) of bytes, as WeChat Pay's `hash_value`.
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        bytes,
    ))
}

/// A bill a sandbox handed out a download link for.
#[derive(Clone, Debug)]
pub(crate) struct IssuedBill {
    /// When the link was issued.
    pub(crate) at: OffsetDateTime,
    /// The zip's file name (Alipay) or the owning `mchid` (WeChat Pay).
    pub(crate) label: String,
    /// The file.
    pub(crate) bytes: Vec<u8>,
}

/// A sandbox's bill counter: the links it has issued (valid `ttl_secs`) and its statement
/// clock (`POST /sandbox/statement-clock`).
#[derive(Debug, Default)]
pub(crate) struct BillDesk {
    today: Option<Date>,
    tamper_next: bool,
    issued: std::collections::HashMap<String, IssuedBill>,
}

impl BillDesk {
    /// Today for bills (Beijing) and whether yesterday's bills are generated yet (from 10:00);
    /// a day set through the control endpoint is always past 10:00.
    pub(crate) fn today(&self, now: OffsetDateTime) -> (Date, bool) {
        match self.today {
            Some(today) => (today, true),
            None => {
                let beijing = now.to_offset(BEIJING_OFFSET);
                (beijing.date(), beijing.hour() >= 10)
            }
        }
    }

    /// True when the day was set through the control endpoint.
    pub(crate) fn clock_set(&self) -> bool {
        self.today.is_some()
    }

    /// Sets the statement clock, and whether the next download is corrupted.
    pub(crate) fn set_clock(&mut self, today: Option<Date>, tamper_next: bool) {
        self.today = today;
        self.tamper_next = tamper_next;
    }

    /// Files a bill under `token`, forgetting links older than `ttl_secs`.
    pub(crate) fn issue(&mut self, token: String, bill: IssuedBill, ttl_secs: i64) {
        let now = bill.at;
        self.issued
            .retain(|_, b| (now - b.at).whole_seconds() < ttl_secs);
        self.issued.insert(token, bill);
    }

    /// The bill behind a link still valid at `now` that `accept` allows, corrupted once when a
    /// tamper is pending (one digit changed: its hash no longer matches).
    pub(crate) fn fetch(
        &mut self,
        token: &str,
        now: OffsetDateTime,
        ttl_secs: i64,
        accept: impl Fn(&IssuedBill) -> bool,
    ) -> Option<IssuedBill> {
        let mut bill = self
            .issued
            .get(token)
            .filter(|b| (now - b.at).whole_seconds() < ttl_secs && accept(b))
            .cloned()?;
        if std::mem::take(&mut self.tamper_next)
            && let Some(byte) = bill.bytes.iter_mut().rev().find(|b| b.is_ascii_digit())
        {
            *byte = if *byte == b'9' { b'8' } else { *byte + 1 };
        }
        Some(bill)
    }
}

/// Body of `POST /sandbox/statement-clock`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct StatementClock {
    /// The date the sandbox treats as today for bills (`yyyy-MM-dd`); absent = the real one.
    pub(crate) today: Option<String>,
    /// WeChat Pay sandbox only: corrupt the next downloaded bill (its SHA-1 then fails).
    #[serde(default)]
    pub(crate) tamper_next: bool,
}

impl StatementClock {
    pub(crate) fn day(&self) -> Result<Option<Date>, (axum::http::StatusCode, String)> {
        match self.today.as_deref() {
            None => Ok(None),
            Some(text) => moongate_contract::statement::parse_day(text)
                .map(Some)
                .ok_or_else(|| {
                    (
                        axum::http::StatusCode::BAD_REQUEST,
                        format!("today: {text:?} is not yyyy-MM-dd"),
                    )
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zip_holds_gbk_named_gbk_files_without_the_utf8_flag() {
        let day = time::macros::date!(2026 - 11 - 21);
        let at = time::macros::datetime!(2026-11-21 10:00:00 +8);
        let entries = vec![AlipayBillEntry {
            trade_no: "2026112122001458860515315453".into(),
            out_trade_no: "pay_1".into(),
            refund_request_no: None,
            subject: "铁观音, 250g".into(),
            created_at: at,
            finished_at: at,
            amount: 1200,
            fee: alipay_fee(1200),
        }];
        let zip = alipay_trade_bill_zip("2088102177846875", day, &entries, at).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
        assert_eq!(archive.len(), 2);
        let entry = archive.by_index_raw(0).unwrap();
        assert_eq!(
            entry.name_raw(),
            gbk("20881021778468750156_20261121_业务明细.csv").as_slice()
        );
        drop(entry);
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut archive.by_index(0).unwrap(), &mut text).unwrap();
        let text = encoding_rs::GBK.decode(&text).0.into_owned();
        assert!(text.contains("#交易合计：1笔，商家实收共12.00元"), "{text}");
        assert!(text.contains("\"铁观音, 250g\""), "{text}");
    }
}
